import datetime

import pytest

from veil.errors import ConfigError
from veil.tee.certificates import load_chain, load_crl, load_root, verify_chain
from veil.tee.errors import (
    CertificateExpired,
    CertificateRevoked,
    MalformedEvidence,
    UnknownCertificate,
)
from veil.tee.simulated import SimulatedPlatform

from .conftest import NOW

DAY = datetime.timedelta(days=1)


def chain_of(platform):
    return [platform.pck, platform.pck_ca, platform.root]


def crls_of(platform):
    return [load_crl(c) for c in platform.collateral().crls]


def test_chain_to_the_configured_root_gives_the_leaf(platform):
    assert verify_chain(chain_of(platform), platform.root, NOW) == platform.pck
    # a chain that stops below the root is completed with it
    assert verify_chain(chain_of(platform)[:2], platform.root, NOW, crls_of(platform))


@pytest.mark.parametrize(
    "when, state", [(NOW + 8 * 365 * DAY, "is expired"), (NOW - 10 * DAY, "is not yet valid")]
)
def test_certificates_outside_their_validity_are_refused(platform, when, state):
    with pytest.raises(CertificateExpired, match=state):
        verify_chain(chain_of(platform), platform.root, when)


def test_chain_of_another_root_is_unknown(platform):
    other = SimulatedPlatform(now=NOW)  # same names, other keys
    with pytest.raises(UnknownCertificate, match="not at the configured root"):
        verify_chain(chain_of(platform), other.root, NOW)
    with pytest.raises(UnknownCertificate, match="is not signed by"):
        verify_chain([platform.pck, other.pck_ca], other.root, NOW)


def test_issuer_must_be_a_certificate_authority(platform):
    with pytest.raises(UnknownCertificate, match="is not a certificate authority"):
        verify_chain([platform.pck, platform.signing, platform.root], platform.root, NOW)


def test_revoked_pck_certificate_is_refused():
    platform = SimulatedPlatform(now=NOW)
    platform.revoke_pck()
    with pytest.raises(CertificateRevoked, match="is revoked by"):
        verify_chain(chain_of(platform), platform.root, NOW, crls_of(platform))


def test_revocation_list_signed_by_someone_else_is_refused(platform):
    other = SimulatedPlatform(now=NOW)
    with pytest.raises(UnknownCertificate, match=r"revocation list .* is not signed by it"):
        verify_chain(chain_of(platform), platform.root, NOW, crls_of(other))


def test_bad_inputs_are_refused_with_the_reason(tmp_path):
    with pytest.raises(MalformedEvidence, match="not a valid PEM chain"):
        load_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(MalformedEvidence, match="certificate chain is empty"):
        verify_chain([], None, NOW)
    with pytest.raises(MalformedEvidence, match=r"revocation list .* does not parse"):
        load_crl(b"not a CRL")
    with pytest.raises(ConfigError, match=r"certificates\.trustedservices\.intel\.com"):
        load_root(tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_text("hello")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        load_root(tmp_path / "bad.pem")
