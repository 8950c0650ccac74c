"""Run configuration: the YAML a user writes for ``veil run``, validated by pydantic.

Unknown keys are errors (a typo must not silently fall back to a default). `load_config` turns
every problem into a `ConfigError` whose message names the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from veil.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    dataset: Literal["breast_cancer", "digits", "mnist", "fraud"] = "breast_cancer"
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)


class PartitionConfig(Section):
    method: Literal["iid", "dirichlet", "shards", "quantity", "site"] = "iid"
    num_clients: int = Field(5, ge=1)
    alpha: float | None = Field(None, gt=0, description="Dirichlet label-skew concentration")
    shards_per_client: int | None = Field(None, ge=1)
    beta: float | None = Field(None, gt=0, description="Dirichlet quantity-skew concentration")

    @model_validator(mode="after")
    def _needs_its_parameter(self) -> PartitionConfig:
        needed = {"dirichlet": "alpha", "shards": "shards_per_client", "quantity": "beta"}
        name = needed.get(self.method)
        if name and getattr(self, name) is None:
            raise ValueError(f"method {self.method!r} needs {name} (a number > 0)")
        return self


class ModelConfig(Section):
    name: Literal["logistic", "mlp", "cnn"] = "logistic"
    hidden: list[int] = Field(default_factory=lambda: [64])
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    channels: int = Field(16, ge=1)


class FederationConfig(Section):
    rounds: int = Field(10, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    poisson_rate: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_sampling_scheme(self) -> FederationConfig:
        given = [
            k
            for k in ("clients_per_round", "fraction", "poisson_rate")
            if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"set only one of clients_per_round, fraction, poisson_rate (got {given})"
            )
        return self


class ClientConfig(Section):
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(32, ge=1)
    local_steps: int | None = Field(None, ge=1)
    local_epochs: int | None = Field(None, ge=1)
    prox_mu: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> ClientConfig:
        if self.local_steps is not None and self.local_epochs is not None:
            raise ValueError("set only one of local_steps and local_epochs")
        return self


class ServerConfig(Section):
    optimizer: Literal["fedavg", "fedavgm", "fedadam", "fedyogi"] = "fedavg"
    lr: float | None = Field(
        None, gt=0, description="server rate η (default 1 for fedavg/m, 0.01 adaptive)"
    )
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


class RuntimeConfig(Section):
    engine: Literal["auto", "fused", "vmap", "sequential"] = "auto"
    device: str = "auto"
    chunk_size: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")


class RunConfig(Section):
    name: str = "run"
    seed: int = 0
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    runtime: RuntimeConfig = RuntimeConfig()


def _section_keys(location: tuple) -> list[str]:
    """The valid keys of the config section at ``location`` (for 'unknown key' messages)."""
    model: type[BaseModel] = RunConfig
    for part in location:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def describe_validation_error(error: ValidationError) -> str:
    """One line: the first problem as ``key.path: message (got value)``, plus how many more."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key (valid keys here: {', '.join(_section_keys(first['loc'][:-1]))})"
    got = (
        ""
        if first["type"] in ("missing", "value_error", "extra_forbidden")
        else f" (got {first.get('input')!r})"
    )
    more = len(error.errors()) - 1
    return f"{where}: {message}{got}" + (f" (and {more} more problem(s))" if more else "")


def parse_config(data: object) -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a `RunConfig`, or raise `ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a run config must be a YAML mapping of sections (got {type(data).__name__})"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; every failure is a one-line `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}"
        ) from None
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
