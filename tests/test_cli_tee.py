import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

import veil.cli_tee  # noqa: F401  (registers `veil tee`; cli.py will import it)
from veil.cli import app
from veil.tee.evidence import aggregator_evidence
from veil.tee.simulated import SimulatedBackend, SimulatedPlatform

runner = CliRunner()
MEASUREMENT = bytes(range(32))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A simulated aggregator's evidence, its root and TLS key, written to files."""
    folder = tmp_path_factory.mktemp("tee")
    platform = SimulatedPlatform()
    tls_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    nonce = bytes(range(32))
    evidence = aggregator_evidence(SimulatedBackend(platform, MEASUREMENT), nonce, tls_key, 4)
    (folder / "evidence.json").write_bytes(evidence)
    (folder / "root.pem").write_bytes(platform.root.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.pem").write_bytes(
        tls_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return folder, nonce


def verify(folder, nonce, measurement, *extra, evidence=None, tls=None):
    args = [
        *("tee", "verify", str(evidence or folder / "evidence.json"), "--nonce", nonce.hex()),
        *("--tls-key", str(tls or folder / "tls.pem"), "--root", str(folder / "root.pem")),
        *("--measurement", measurement.hex(), *extra),
    ]
    return runner.invoke(app, args)


def test_verify_prints_what_was_attested(deployment):
    folder, nonce = deployment
    result = verify(folder, nonce, MEASUREMENT, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["measurement"] == MEASUREMENT.hex() and document["round"] == 4
    plain = verify(folder, nonce, MEASUREMENT)
    assert plain.stdout.startswith("SIMULATED attestation, NO hardware protection")


def test_verify_refuses_with_the_reason_and_exit_2(deployment):
    folder, nonce = deployment
    result = verify(folder, nonce, bytes(32))
    assert result.exit_code == 2 and "is not on the allowlist" in result.stderr
    result = verify(folder, bytes(32), MEASUREMENT)
    assert result.exit_code == 2 and "answers another nonce" in result.stderr
    result = verify(folder, nonce, MEASUREMENT, "--nonce", "zz")
    assert result.exit_code == 2 and "--nonce must be hex" in result.stderr


def test_verify_names_unreadable_files(deployment, tmp_path):
    folder, nonce = deployment
    (tmp_path / "tls.pem").write_text("nope")
    result = verify(folder, nonce, MEASUREMENT, tls=tmp_path / "tls.pem")
    assert result.exit_code == 2 and "is not a PEM key or certificate" in result.stderr
    result = verify(folder, nonce, MEASUREMENT, evidence=tmp_path / "none.json")
    assert result.exit_code == 2 and "evidence" in result.stderr and "none.json" in result.stderr


def test_measure_prints_the_measurement_and_its_manifest():
    result = runner.invoke(app, ["tee", "measure", "examples/hospitals.yaml", "--manifest"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "veil-aggregator-measurement/1" and len(lines[-1]) == 64
    assert any(line.startswith("file ") and line.endswith(" tee/measurement.py") for line in lines)


def test_build_without_gramine_exits_2_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text("name: run\n")
    result = runner.invoke(app, ["tee", "build", str(config), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "gramine-manifest not found on PATH" in result.stderr
