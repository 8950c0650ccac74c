"""Run configuration: the YAML a user writes for ``veil run``, validated by pydantic.

Unknown keys are errors (a typo must not silently fall back to a default). `load_config` turns
every problem into a `ConfigError` whose message names the offending key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from veil.config_section import Section, reject_unused
from veil.data import DATASETS, PARTITION_METHODS
from veil.errors import ConfigError
from veil.fl.server_optimizers import SERVER_OPTIMIZERS
from veil.models.zoo import ACTIVATIONS, MODELS
from veil.mpc.config import MpcConfig
from veil.privacy.accounting import ACCOUNTANTS
from veil.privacy.ldp import MAX_EPSILON, ORACLES
from veil.runtime.sim import ENGINES
from veil.secagg.messages import STAGES
from veil.tee.config import TeeConfig


class DataConfig(Section):
    dataset: Literal[DATASETS] = "breast_cancer"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)


class PartitionConfig(Section):
    method: Literal[PARTITION_METHODS] = "iid"
    num_clients: int = Field(5, ge=1)
    alpha: float | None = Field(None, gt=0, description="Dirichlet label-skew concentration")
    shards_per_client: int | None = Field(None, ge=1)
    beta: float | None = Field(None, gt=0, description="Dirichlet quantity-skew concentration")

    @model_validator(mode="after")
    def _needs_its_parameter(self) -> PartitionConfig:
        needed = {"alpha": ("dirichlet",), "shards_per_client": ("shards",), "beta": ("quantity",)}
        for key, (method,) in needed.items():
            if self.method == method and getattr(self, key) is None:
                raise ValueError(f"method {method!r} needs {key} (a number > 0)")
        reject_unused(self, needed, "method")
        return self


class ModelConfig(Section):
    name: Literal[MODELS] = "logistic"
    hidden: list[int] = Field(default_factory=lambda: [64])
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    channels: int = Field(16, ge=1)


class FederationConfig(Section):
    rounds: int = Field(10, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    poisson_rate: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_sampling_scheme(self) -> FederationConfig:
        schemes = ("clients_per_round", "fraction", "poisson_rate")
        given = [k for k in schemes if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of {', '.join(schemes)} (got {given})")
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
    optimizer: Literal[tuple(SERVER_OPTIMIZERS)] = "fedavg"
    lr: float | None = Field(None, gt=0, description="server rate η (default: the optimizer's)")
    momentum: float | None = Field(None, ge=0, lt=1)
    beta1: float | None = Field(None, ge=0, lt=1)
    beta2: float | None = Field(None, ge=0, lt=1)
    tau: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _hyperparameters_of_the_optimizer(self) -> ServerConfig:
        adaptive = ("fedadam", "fedyogi")
        used_by = {"momentum": ("fedavgm",), "beta1": adaptive, "beta2": adaptive, "tau": adaptive}
        reject_unused(self, used_by, "optimizer")
        return self

    def hyperparameters(self) -> dict[str, float]:
        """The optimizer's keyword arguments that the config sets (the rest keep defaults)."""
        keys = ("lr", "momentum", "beta1", "beta2", "tau")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class RuntimeConfig(Section):
    backend: Literal["simulation", "ray"] = Field(
        "simulation", description="where clients train: this process, or Ray actors"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join (default: start a local one)"
    )
    ray_workers: int | None = Field(None, ge=1, description="Ray actors (default: 2)")
    engine: Literal[("auto", *ENGINES)] = "auto"
    device: str = "auto"
    chunk_size: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1, le=os.cpu_count() or 1, description="torch CPU threads")
    keep_freed_memory: bool = Field(True, description="glibc keeps freed memory for reuse")

    @model_validator(mode="after")
    def _ray_settings_need_ray(self) -> RuntimeConfig:
        reject_unused(self, {"ray_address": ("ray",), "ray_workers": ("ray",)}, "backend")
        return self


class PrivacyConfig(Section):
    """Client-level DP (DP-FedAvg: clip each client's update, noise the sum) or sample-level DP
    (every client trains by DP-SGD: clip each record's gradient, noise every local step)."""

    level: Literal["client", "sample"] = "client"
    noise_multiplier: float | None = Field(None, gt=0, description="σ, relative to the clip norm")
    target_epsilon: float | None = Field(
        None, gt=0, description="calibrate σ to spend this over all rounds"
    )
    delta: float = Field(1e-5, gt=0, lt=1)
    clip_norm: float = Field(
        1.0, gt=0, description="L2 bound on each client's update (initial, if adaptive)"
    )
    adaptive_clipping: bool = False
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_learning_rate: float = Field(0.2, gt=0)
    bit_noise_multiplier: float | None = Field(None, gt=0)
    noise_decay: float = Field(1.0, gt=0, le=1, description="σ_t = σ · decay^(t-1); 1 = constant")
    budget_epsilon: float | None = Field(
        None, gt=0, description="the ledger refuses releases beyond it"
    )
    accountant: Literal[ACCOUNTANTS] = "pld"
    ledger: str | None = Field(None, description="ledger file (default: OUT/privacy_ledger.jsonl)")
    noise_seed_for_testing: int | None = Field(None, description="reproducible noise: NOT private")

    @model_validator(mode="after")
    def _noise_or_target(self) -> PrivacyConfig:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("set exactly one of noise_multiplier and target_epsilon")
        if self.target_epsilon is not None and self.noise_decay != 1:
            raise ValueError(
                "noise_decay < 1 needs noise_multiplier (σ of round 1), not target_epsilon"
            )
        adaptive_only = ("bit_noise_multiplier",)
        if not self.adaptive_clipping and any(getattr(self, k) is not None for k in adaptive_only):
            raise ValueError("bit_noise_multiplier applies only with adaptive_clipping: true")
        if self.level == "sample" and (self.adaptive_clipping or self.noise_decay != 1):
            raise ValueError("adaptive_clipping and noise_decay apply only to level: client")
        return self

    @property
    def budget(self) -> float | None:
        """The ε the ledger may spend: ``budget_epsilon``, else ``target_epsilon``, else none."""
        return self.budget_epsilon if self.budget_epsilon is not None else self.target_epsilon


class SecureAggregationConfig(Section):
    """SecAgg+ (Bell et al. 2020): the server learns only the sum of the surviving clients'
    updates. Defaults: k = n − 1 up to 32 clients, else ≈ 3·log2(n); t = ⌊k/2⌋ + 1."""

    protocol: Literal["secagg+"] = "secagg+"
    neighbors: int | None = Field(None, ge=1, description="k: neighbours of each client")
    threshold: int | None = Field(None, ge=1, description="t: shares needed to unmask")
    min_survivors: int | None = Field(
        None, ge=1, description="fewest inputs a sum may have (default: t)"
    )
    bits: int = Field(32, ge=8, le=64, description="arithmetic in Z_{2^bits}")
    clip_norm: float | None = Field(
        None, gt=0, description="L2 bound before quantizing (default: privacy.clip_norm)"
    )
    post_quantum: bool = Field(False, description="X25519 + ML-KEM-768 hybrid pairwise keys")
    simulated_dropout: float = Field(0.0, ge=0, lt=1, description="each client's drop chance")
    dropout_stage: Literal[STAGES] = "unmasking"


class EncryptionConfig(Section):
    """Encrypted aggregation: clients encrypt, the server adds ciphertexts, a separate key holder
    decrypts only the sum. BFV and Paillier pack quantized values (BatchCrypt); CKKS is floats."""

    scheme: Literal["bfv", "ckks", "paillier"] = "bfv"
    clip_norm: float | None = Field(
        None, gt=0, description="L2 bound on each update (default: privacy.clip_norm)"
    )
    value_bits: int = Field(16, ge=2, le=32, description="quantized width (bfv, paillier)")
    min_clients: int | None = Field(
        None, ge=1, description="the key holder decrypts only sums of this many (default: all)"
    )
    paillier_bits: int = Field(3072, ge=1024, description="Paillier modulus bits")


ROBUST_METHODS = ("krum", "multi_krum", "median", "trimmed_mean", "norm_bounding")


class RobustConfig(Section):
    """A Byzantine-robust aggregator in place of the mean (`veil.fl.robust`)."""

    method: Literal[ROBUST_METHODS]
    num_byzantine: int | None = Field(None, ge=0, description="f: attackers tolerated (krum)")
    num_selected: int | None = Field(None, ge=1, description="m: updates averaged (multi_krum)")
    trim_fraction: float | None = Field(
        None, ge=0, lt=0.5, description="β: share trimmed from each end (trimmed_mean)"
    )
    max_norm: float | None = Field(None, gt=0, description="L2 bound per update (norm_bounding)")
    noise_std: float | None = Field(
        None, ge=0, description="weak-DP noise std on the mean (norm_bounding; not a DP claim)"
    )

    @model_validator(mode="after")
    def _parameters_of_the_method(self) -> RobustConfig:
        used_by = {
            "num_byzantine": ("krum", "multi_krum"),
            "num_selected": ("multi_krum",),
            "trim_fraction": ("trimmed_mean",),
            "max_norm": ("norm_bounding",),
            "noise_std": ("norm_bounding",),
        }
        reject_unused(self, used_by, "method")
        needed = {
            "krum": "num_byzantine",
            "multi_krum": "num_byzantine",
            "trimmed_mean": "trim_fraction",
            "norm_bounding": "max_norm",
        }
        key = needed.get(self.method)
        if key is not None and getattr(self, key) is None:
            raise ValueError(f"method {self.method!r} needs {key}")
        return self

    def parameters(self) -> dict[str, float]:
        """The aggregator's keyword arguments that the config sets."""
        keys = ("num_byzantine", "num_selected", "trim_fraction", "max_norm", "noise_std")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class AggregationConfig(Section):
    """How the server combines updates beyond the plain (weighted) mean."""

    robust: RobustConfig | None = None
    tee: TeeConfig | None = None


class VerticalConfig(Section):
    """Vertical FL on the synthetic fraud data: PSI, then Paillier hetero logistic regression."""

    num_shared: int = Field(1600, ge=2, description="customers of both the bank and the partner")
    num_bank_only: int = Field(400, ge=0, description="customers only the bank has")
    num_partner_only: int = Field(400, ge=0, description="customers only the partner has")
    num_partner_signals: int = Field(
        8, ge=0, le=64, description="generic fraud signals the partner holds (besides distance)"
    )
    fraud_rate: float = Field(0.05, gt=0, lt=0.5, description="share of fraudulent customers")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of customers held out")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the aligned training rows")
    batch_size: int = Field(64, ge=1, le=100_000, description="rows per SGD step")
    learning_rate: float = Field(0.15, gt=0, le=100, description="SGD step size")
    l2: float = Field(0.0, ge=0, description="L2 penalty λ on the weights (not the intercept)")
    key_bits: int = Field(3072, le=4096, multiple_of=256, description="Paillier modulus bits")
    threads: int = Field(2, ge=1, le=64, description="threads computing encryption randomness")

    @model_validator(mode="after")
    def _secure_key(self) -> VerticalConfig:
        if self.key_bits < 3072:
            raise ValueError(
                f"a {self.key_bits}-bit Paillier modulus is below 128-bit security "
                "(NIST SP 800-57 needs 3072 bits)"
            )
        return self


class FrequencyConfig(Section):
    """Local-DP frequency estimation: phones report one typed word each through an oracle."""

    num_phones: int = Field(100_000, ge=1)
    vocab_size: int = Field(1000, ge=2)
    words_per_phone: int = Field(1, ge=1)
    zipf_exponent: float = Field(1.1, gt=0)
    personal_weight: float = Field(0.2, ge=0, le=1)
    oracle: Literal[ORACLES] = "auto"
    epsilon: float = Field(2.0, gt=0, le=MAX_EPSILON)
    noise_seed_for_testing: int | None = Field(None, description="reproducible noise: NOT private")


class DeploymentConfig(Section):
    """A real deployment over gRPC (``veil server`` / ``veil client``, `veil.runtime.grpc`)."""

    address: str = Field("127.0.0.1:50051", description="host:port the server listens on")
    sites: list[str] | None = Field(
        None, min_length=1, description="allowlist of site names (default: every client)"
    )
    min_clients: int | None = Field(
        None, ge=1, description="sites connected before a round starts (default: all allowed)"
    )
    round_timeout: float = Field(120.0, gt=0, description="seconds sites have to train and reply")
    stage_timeout: float = Field(30.0, gt=0, description="seconds per SecAgg+ stage")
    poll_seconds: float = Field(5.0, gt=0, le=60, description="long poll of an idle site")
    chunk_bytes: int = Field(1 << 20, ge=1024, description="bytes per streamed chunk")
    max_message_bytes: int = Field(256 << 20, ge=1024, description="largest task or reply")
    max_failed_rounds: int = Field(5, ge=1, description="attempts at a round before stopping")


class RunConfig(Section):
    name: str = "run"
    task: Literal[
        "federated_training", "frequency_estimation", "vertical_training", "mpc_training"
    ] = "federated_training"
    seed: int = Field(0, ge=0, lt=2**63)
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    privacy: PrivacyConfig | None = None
    secure_aggregation: SecureAggregationConfig | None = None
    encryption: EncryptionConfig | None = None
    aggregation: AggregationConfig = AggregationConfig()
    frequency: FrequencyConfig | None = None
    vertical: VerticalConfig | None = None
    mpc: MpcConfig | None = None
    deployment: DeploymentConfig | None = None

    @model_validator(mode="after")
    def _sections_of_the_task(self) -> RunConfig:
        own = {
            "frequency_estimation": "frequency",
            "vertical_training": "vertical",
            "mpc_training": "mpc",
        }
        for task, section in own.items():
            given = getattr(self, section) is not None
            if self.task == task and not given:
                raise ValueError(f"task {task} needs a {section} section")
            if self.task != task and given:
                raise ValueError(f"a {section} section needs task: {task}")
        if self.task == "frequency_estimation" and self.privacy is not None:
            raise ValueError(
                "task frequency_estimation takes its ε in frequency.epsilon, not privacy"
            )
        for task in ("vertical_training", "mpc_training"):
            if self.task == task and self.privacy is not None:
                raise ValueError(f"task {task} does not support privacy (no DP yet)")
        if self.task != "federated_training" and (self.secure_aggregation or self.encryption):
            raise ValueError("secure_aggregation and encryption apply to task federated_training")
        if self.secure_aggregation is not None and self.encryption is not None:
            raise ValueError("choose one of secure_aggregation and encryption")
        if self.aggregation.tee is not None and self.task != "federated_training":
            raise ValueError("aggregation.tee applies to task federated_training")
        if self.aggregation.tee is not None and self.encryption is not None:
            raise ValueError(
                "aggregation.tee cannot wrap encryption: its key holder is a separate party; use "
                "the enclave alone, or with secure_aggregation as defence in depth"
            )
        robust = self.aggregation.robust
        if robust is not None and self.task != "federated_training":
            raise ValueError("aggregation.robust applies to task federated_training")
        if robust is not None and self.privacy is not None and self.privacy.level == "client":
            raise ValueError(
                f"aggregation.robust ({robust.method}) replaces the mean whose sensitivity "
                "client-level DP calibrates its noise to; use privacy.level: sample (DP-SGD in "
                "each client, robust aggregation is then post-processing) or drop one of them"
            )
        return self


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config as UTF-8 text ({error})") from None
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
