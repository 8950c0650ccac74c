"""Shared pieces of the TEE tests: a simulated platform, its policy, and a run config with an
``aggregation.tee`` section."""

import datetime
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from veil.config import parse_config
from veil.fl.links import ClientUpdates
from veil.randomness import InsecureNoiseWarning, noise_generator
from veil.tee.simulated import SimulatedBackend, SimulatedPlatform
from veil.tee.verifier import AttestationPolicy

MEASUREMENT = bytes(range(32))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# σ given (no calibration) and RDP accounting: fast; test noise seed: NOT private.
PRIVACY = {
    "noise_multiplier": 1.9,
    "clip_norm": 0.1,
    "accountant": "rdp",
    "noise_seed_for_testing": 0,
}
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="session")
def platform():
    return SimulatedPlatform(now=NOW)


@pytest.fixture(scope="session")
def backend(platform):
    return SimulatedBackend(platform, MEASUREMENT)


@pytest.fixture(scope="session")
def policy(platform):
    return AttestationPolicy(platform.root, frozenset({MEASUREMENT}), hardware=False)


@pytest.fixture
def test_key():
    """A reproducible noise key (NOT private: tests only)."""

    def make(seed=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureNoiseWarning)
            return noise_generator(seed_for_testing=seed)

    return make


@pytest.fixture
def tee_config():
    """A run config (the hospitals example, 2 rounds, fixed σ) with ``aggregation.tee``."""

    def make(tee=None, **sections):
        data = yaml.safe_load(EXAMPLES.joinpath("hospitals.yaml").read_text(encoding="utf-8"))
        data["federation"]["rounds"] = 2
        data["privacy"] = dict(PRIVACY)
        data.update(sections)
        data["aggregation"] = {"tee": tee if tee is not None else {"backend": "simulated"}}
        return parse_config(data)

    return make


@pytest.fixture
def batch():
    torch.manual_seed(0)
    deltas = {"w": torch.randn(4, 3, 2) * 0.01, "b": torch.randn(4, 2) * 0.01}
    return ClientUpdates(deltas, torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.arange(4))


@pytest.fixture
def collateral_dir(tmp_path, platform):
    """The platform's collateral as an operator downloads it from Intel PCS."""
    folder = tmp_path / "collateral"
    folder.mkdir()
    collateral = platform.collateral()
    (folder / "tcb_info.json").write_bytes(collateral.tcb_info)
    (folder / "qe_identity.json").write_bytes(collateral.qe_identity)
    (folder / "tcb_signing_chain.pem").write_bytes(collateral.signing_chain)
    for i, crl in enumerate(collateral.crls):
        (folder / f"{i}.crl").write_bytes(crl)
    return folder


class FakeGramine:
    """/dev/attestation as Gramine-SGX exposes it, answered by a simulated backend (a static
    quote: ``refresh`` primes it with the report data the next reader expects)."""

    def __init__(self, root, backend, kind="dcap"):
        self.root, self.backend = root, backend
        (root / "keys").mkdir(parents=True, exist_ok=True)
        (root / "attestation_type").write_text(kind)
        (root / "keys" / "_sgx_mrenclave").write_bytes(b"\x07" * 16)
        self.refresh(bytes(64))

    def refresh(self, report_data):
        (self.root / "quote").write_bytes(self.backend.quote(report_data))


@pytest.fixture
def fake_gramine(tmp_path):
    return lambda backend, kind="dcap": FakeGramine(tmp_path / "attestation", backend, kind)
