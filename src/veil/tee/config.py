"""The ``aggregation.tee`` section of a run config: which enclave, and what clients accept.

aggregation:
  tee:
    backend: sgx-dcap            # or simulated (development: NO hardware protection)
    measurement: 5f1c…e2         # MRENCLAVE printed by `veil tee build`
    allowlist: []                # further accepted measurements (e.g. during an upgrade)
    root_certificate: Intel_SGX_Provisioning_Certification_RootCA.pem
    collateral: collateral/      # tcb_info.json, qe_identity.json, tcb_signing_chain.pem
    accepted_tcb_statuses: [UpToDate]
    allow_debug: false           # production mode: debug enclaves are refused
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from veil.config_section import Section
from veil.tee.collateral import TCB_STATUSES
from veil.tee.measurement import parse_measurement

TEE_BACKENDS = ("simulated", "sgx-dcap")


class TeeConfig(Section):
    """An attested aggregator: clients verify its quote before sending their updates."""

    backend: Literal[TEE_BACKENDS] = "simulated"
    measurement: str = Field(
        "auto",
        description="hex MRENCLAVE (or MRTD) clients accept; auto (simulated only): the "
        "measurement of this installation running this config",
    )
    allowlist: list[str] = Field(default_factory=list, description="further accepted ones")
    root_certificate: str | None = Field(
        None, description="PEM file of the attestation root (sgx-dcap: Intel SGX Root CA)"
    )
    collateral: str | None = Field(
        None, description="sgx-dcap: folder of TCB info, QE identity and signing chain (PCS)"
    )
    accepted_tcb_statuses: list[Literal[TCB_STATUSES]] = Field(
        default_factory=lambda: ["UpToDate"], min_length=1
    )
    allow_debug: bool = Field(False, description="accept debug enclaves (development only)")
    debug: bool = Field(False, description="simulated only: run the enclave in debug mode")

    @model_validator(mode="after")
    def _settings_of_the_backend(self) -> TeeConfig:
        if self.measurement != "auto":
            parse_measurement(self.measurement, "aggregation.tee.measurement")
        for entry in self.allowlist:
            parse_measurement(entry, "aggregation.tee.allowlist entries")
        if self.backend == "simulated":
            given = [k for k in ("root_certificate", "collateral") if getattr(self, k)]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply only to backend sgx-dcap (the simulated "
                    "platform has its own test root)"
                )
            return self
        missing = [k for k in ("root_certificate", "collateral") if not getattr(self, k)]
        if self.measurement == "auto":
            missing.insert(0, "measurement (the MRENCLAVE `veil tee build` prints)")
        if missing:
            raise ValueError(f"backend sgx-dcap needs {', '.join(missing)}")
        if self.debug:
            raise ValueError("debug applies only to backend simulated (sgx-dcap: veil tee build)")
        return self
