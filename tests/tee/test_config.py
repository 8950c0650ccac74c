import pytest
from pydantic import ValidationError

from veil.tee.config import TeeConfig


def test_defaults_are_a_simulated_enclave_in_production_mode():
    tee = TeeConfig()
    assert (tee.backend, tee.measurement, tee.allow_debug) == ("simulated", "auto", False)
    assert tee.accepted_tcb_statuses == ["UpToDate"]


def test_sgx_dcap_with_everything_it_needs():
    tee = TeeConfig(
        backend="sgx-dcap", measurement="ab" * 32, root_certificate="root.pem", collateral="c/"
    )
    assert tee.backend == "sgx-dcap"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"backend": "sgx-dcap"}, "sgx-dcap needs measurement .* root_certificate, collateral"),
        (
            {"backend": "sgx-dcap", "measurement": "ab" * 32, "collateral": "c"},
            "needs root_certificate",
        ),
        ({"root_certificate": "root.pem"}, "apply only to backend sgx-dcap"),
        ({"measurement": "1234"}, "aggregation.tee.measurement must be 64 or 96 hex digits"),
        ({"allowlist": ["zz"]}, "allowlist entries must be 64 or 96 hex digits"),
        ({"accepted_tcb_statuses": ["Fine"]}, "UpToDate"),
        ({"accepted_tcb_statuses": []}, "at least 1 item"),
        ({"backend": "tdx"}, "simulated"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
        (
            {
                "backend": "sgx-dcap",
                "measurement": "ab" * 32,
                "root_certificate": "r",
                "collateral": "c",
                "debug": True,
            },
            "debug applies only to backend simulated",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_reason(settings, message):
    with pytest.raises(ValidationError, match=message):
        TeeConfig(**settings)
