import dataclasses

import pytest

from veil.errors import ConfigError
from veil.tee.evidence import aggregator_evidence, report_data_for, verify_aggregator
from veil.tee.sgx_dcap import GramineBackend, load_collateral


def test_quotes_and_sealing_key_come_from_dev_attestation(
    fake_gramine, backend, collateral_dir, policy
):
    fake = fake_gramine(backend)
    gramine = GramineBackend(collateral_dir, fake.root)
    assert gramine.measurement == backend.measurement and gramine.hardware
    assert gramine.sealing_secret() == b"\x07" * 16
    assert gramine.collateral().tcb_info == (collateral_dir / "tcb_info.json").read_bytes()
    nonce, key = bytes(range(32)), policy.root.public_key()
    # the real device answers the report data just written; the fake is primed with it
    fake.refresh(report_data_for(key, nonce, 0))
    evidence = aggregator_evidence(gramine, nonce, key)
    assert (fake.root / "user_report_data").read_bytes() == report_data_for(key, nonce, 0)
    verified = verify_aggregator(evidence, nonce, key, dataclasses.replace(policy, hardware=True))
    assert verified.measurement == backend.measurement and verified.hardware
    assert verified.describe().startswith("aggregator attested (SGX measurement")


def test_outside_gramine_the_backend_is_refused(tmp_path, collateral_dir):
    with pytest.raises(ConfigError, match="must run inside Gramine-SGX"):
        GramineBackend(collateral_dir, tmp_path / "nowhere")


def test_epid_attestation_is_refused(fake_gramine, backend, collateral_dir):
    fake = fake_gramine(backend, kind="epid")
    with pytest.raises(ConfigError, match="attestation type 'epid', not 'dcap'"):
        GramineBackend(collateral_dir, fake.root)


def test_missing_collateral_files_are_named(tmp_path):
    (tmp_path / "tcb_info.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"lacks qe_identity\.json, tcb_signing_chain\.pem"):
        load_collateral(tmp_path)
