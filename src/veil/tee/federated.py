"""An attested aggregator for a federated run, from its config: enclave, links, claim.

`tee_plan` wraps the run's own chains: the clients run the inner encoder (clipping, SecAgg+
masking, ...), attest the enclave and encrypt to it; the enclave runs the inner aggregator
(mean, robust rule, SecAgg+ server, central DP noise). Combined with client-level DP the noise
is added inside the enclave (central DP without trusting the operator); combined with SecAgg+
the enclave only ever sees the masked sum's inputs (defence in depth). Encrypted aggregation
(HE) is refused: its key holder is a separate party the enclave would replace.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from cryptography import x509

from veil.claims import secure_sum_claim
from veil.config import RunConfig
from veil.errors import ConfigError
from veil.fl.links import Link
from veil.privacy.federated import DpPlan
from veil.report import ReportSection
from veil.secagg.federated import SecurePlan
from veil.tee.certificates import load_root
from veil.tee.config import TeeConfig
from veil.tee.enclave import AttestedAggregator
from veil.tee.evidence import EnclaveBackend
from veil.tee.links import AttestingClients, attested_encoder, enclave_aggregator
from veil.tee.measurement import measure_aggregator, parse_measurement
from veil.tee.sgx_dcap import GramineBackend
from veil.tee.simulated import SimulatedBackend, shared_platform
from veil.tee.verifier import AttestationPolicy

# The tail of DpPlan.claim that an enclave makes untrue: it is replaced by the TEE clause.
IN_THE_CLEAR = (
    "; the server still sees each sampled client's clipped update in the clear "
    "(no secure aggregation)."
)
SIMULATED_PREFIX = "SIMULATED enclave, NO hardware protection is in place: "


@dataclass(frozen=True)
class TeePlan:
    encoder: Link
    aggregator: Link
    enclave: AttestedAggregator
    clients: AttestingClients
    secure: SecurePlan | None = None  # SecAgg+ inside the enclave

    @property
    def hardware(self) -> bool:
        return self.enclave.backend.hardware

    def clause(self) -> str:
        policy = self.clients.policy
        statuses = "/".join(sorted(policy.accepted_tcb_statuses))
        measurement = self.enclave.backend.measurement.hex()[:16]
        if not self.hardware:
            return (
                "the aggregator's attestation was only simulated with a local test key (quote, "
                f"allowlist of measurement {measurement}…, nonces and sealed state exercised), "
                "so the operator can read every update"
            )
        mode = "debug mode allowed" if policy.allow_debug else "production mode"
        return (
            "the aggregator runs in an Intel SGX enclave (Gramine, DCAP attestation) that every "
            f"client verified before sending its update (measurement {measurement}… on the "
            f"allowlist, TCB {statuses}, {mode}), so the operator sees only encrypted updates "
            "and sealed state; this trusts Intel's hardware and keys and does not cover side "
            "channels"
        )

    def claim(
        self, config: RunConfig, dp: DpPlan | None, epsilon: float | None, rounds: int
    ) -> str:
        """One sentence: the DP guarantee (if any), the SecAgg+ clause (if any), the enclave."""
        clause = self.clause()
        if self.secure is not None:
            sentence = self.secure.claim(config, dp, epsilon, rounds)
            sentence = f"{sentence.rstrip('.')}; as defence in depth, {clause}."
        elif dp is not None and dp.local_dp is None:  # client level: noise added in the enclave
            head = dp.claim(epsilon, rounds).removesuffix(IN_THE_CLEAR)
            sentence = f"{head}, the noise added inside the enclave; {clause}."
        else:
            sentence = secure_sum_claim(clause, config, dp, epsilon, rounds, "")
        return sentence if self.hardware else SIMULATED_PREFIX + sentence

    def report_section(self) -> ReportSection:
        """What was attested, for the run's report."""
        policy = self.clients.policy
        rows = {
            "backend": self.enclave.backend.name
            + ("" if self.hardware else " (SIMULATED: NO hardware protection)"),
            "measurement": self.enclave.backend.measurement.hex(),
            "allowlist": ", ".join(sorted(m.hex() for m in policy.measurements)),
            "accepted TCB statuses": ", ".join(sorted(policy.accepted_tcb_statuses)),
            "debug enclaves": "accepted" if policy.allow_debug else "refused",
            "round counter": str(self.enclave.round_counter),
        }
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items()
        )
        return ReportSection("Trusted execution", f"<table>{body}</table>")


def attestation_policy(
    tee: TeeConfig, config: RunConfig, simulated_root: x509.Certificate | None = None
) -> AttestationPolicy:
    """What a client running ``config`` accepts under ``tee``: the root (sgx-dcap: the
    configured certificate; simulated: ``simulated_root``, the simulated platform's test
    root), the measurements ("auto": this installation's own measurement of ``config``), the
    TCB statuses and the mode."""
    if tee.backend == "simulated":
        if simulated_root is None:
            raise ConfigError("the simulated backend's policy needs the simulated platform's root")
        root = simulated_root
    else:
        root = load_root(tee.root_certificate)
    accepted = {
        measure_aggregator(config.model_dump(mode="json")).digest
        if tee.measurement == "auto"
        else parse_measurement(tee.measurement, "aggregation.tee.measurement")
    }
    accepted |= {parse_measurement(m, "aggregation.tee.allowlist entries") for m in tee.allowlist}
    return AttestationPolicy(
        root,
        frozenset(accepted),
        frozenset(tee.accepted_tcb_statuses),
        tee.allow_debug,
        hardware=tee.backend != "simulated",
    )


def enclave_backend(tee: TeeConfig, config: RunConfig) -> tuple[EnclaveBackend, AttestationPolicy]:
    """The enclave back end ``tee`` names and the policy the clients apply to it. Simulated
    enclaves run on this process's `shared_platform`."""
    if tee.backend == "simulated":
        platform = shared_platform()
        measured = measure_aggregator(config.model_dump(mode="json")).digest
        backend = SimulatedBackend(platform, measured, debug=tee.debug)
        return backend, attestation_policy(tee, config, platform.root)
    return GramineBackend(tee.collateral), attestation_policy(tee, config)


def tee_plan(
    config: RunConfig,
    encoder: Link,
    aggregator: Link,
    secure: SecurePlan | None = None,
) -> TeePlan:
    """Wrap the run's ``encoder`` and ``aggregator`` chains (as `build_plan` made them) with
    attestation and the enclave; ``secure`` is the SecAgg+ plan when there is one."""
    tee = config.aggregation.tee  # the config refused encryption with it (separate key holder)
    backend, policy = enclave_backend(tee, config)
    privacy = config.privacy
    seed = privacy.noise_seed_for_testing if privacy is not None else None
    enclave = AttestedAggregator(backend, aggregator, noise_seed_for_testing=seed)
    clients = AttestingClients(policy)
    return TeePlan(
        attested_encoder(enclave, clients, encoder),
        enclave_aggregator(enclave),
        enclave,
        clients,
        secure,
    )
