"""The ``mpc:`` section of a run config (``task: mpc_training``), validated by pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from veil.config_section import Section
from veil.mpc.training import MAX_TRAINING_FRACTIONAL_BITS

__all__ = ["MpcConfig"]


class MpcConfig(Section):
    """Secure training between 2 hospitals (SecureML: additive shares, Beaver triples) or 3
    (ABY3: replicated shares, honest majority), each hospital a process on a TLS link."""

    parties: int = Field(2, ge=2, le=3, description="hospitals, each also a computing party")
    split: Literal["rows", "features"] = Field(
        "rows", description="each hospital holds some patients (rows) or some measurements"
    )
    model: Literal["logistic", "mlp"] = "logistic"
    hidden: int = Field(8, ge=1, le=256, description="hidden ReLU units (mlp)")
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=100_000)
    learning_rate: float = Field(0.1, gt=0, le=100)
    fractional_bits: int = Field(
        16,
        ge=8,
        le=MAX_TRAINING_FRACTIONAL_BITS,
        description="fixed point f; products carry 2f bits in the 64-bit ring, so a larger f "
        "makes a wrong truncation likely (about 4x per extra bit; 3.5e-5 a run at 16)",
    )
    sigmoid: Literal["piecewise", "taylor", "polynomial"] = Field(
        "piecewise",
        description="clip(0.5 + z/4, 0, 1) by garbled ReLUs, 0.5 + z/4, or a degree-5 "
        "least-squares fit on [-8, 8] (no comparison)",
    )
    triples: Literal["dealer", "paillier"] | None = Field(
        None, description="2 parties: Beaver triples from a trusted dealer or from Paillier"
    )
    paillier_bits: int = Field(3072, le=4096, multiple_of=256, description="Paillier modulus")
    release: Literal["model", "predictions"] = Field(
        "model", description="open the model to all, or keep it shared and predict securely"
    )
    transport: Literal["processes", "threads"] = Field(
        "processes", description="one process per party over TLS, or threads of one process"
    )
    deadline_seconds: float = Field(60.0, gt=0, le=3600, description="wait for a peer at most")

    @model_validator(mode="after")
    def _consistent(self) -> MpcConfig:
        if self.parties == 3 and self.triples is not None:
            raise ValueError("3 parties need no Beaver triples (replicated sharing): drop triples")
        if self.paillier_bits < 3072:
            raise ValueError(
                f"a {self.paillier_bits}-bit Paillier modulus is below 128-bit security "
                "(NIST SP 800-57 needs 3072 bits)"
            )
        if self.model == "logistic" and "hidden" in self.model_fields_set:
            raise ValueError("hidden applies only to model mlp")
        return self

    @property
    def triple_source(self) -> str:
        """Where the two-party triples come from (``"dealer"`` unless set)."""
        return self.triples or "dealer"
