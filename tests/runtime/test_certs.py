import datetime
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from veil.errors import ConfigError
from veil.runtime.certs import (
    check_site_name,
    common_name,
    init_authority,
    issue_site,
    server_credentials,
    site_credentials,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("certs")
    init_authority(path, ("localhost", "127.0.0.1", "fl.example.org"))
    issue_site(path, "hospital-a")
    return path


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_a_ca_and_a_server_certificate_for_its_hosts(folder):
    ca, server = load(folder / "ca.pem"), load(folder / "server.pem")
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "fl.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)


def test_a_site_certificate_names_the_site_and_is_for_client_auth(folder):
    site = load(folder / "sites" / "hospital-a.pem")
    site.verify_directly_issued_by(load(folder / "ca.pem"))
    assert common_name((folder / "sites" / "hospital-a.pem").read_bytes()) == "hospital-a"
    usage = site.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    left = site.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < left <= datetime.timedelta(days=365)


def test_private_keys_are_readable_by_their_owner_only(folder):
    for key in ("ca.key", "server.key", "sites/hospital-a.key"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "ca.pem").stat().st_mode) & 0o044  # certificates are public


def test_credentials_load_what_each_party_needs(folder):
    server = server_credentials(folder)
    assert b"PRIVATE KEY" in server.key and common_name(server.certificate) == "veil server"
    site = site_credentials(folder, "hospital-a")
    assert site.authority == (folder / "ca.pem").read_bytes()
    assert common_name(site.certificate) == "hospital-a"


def test_existing_certificates_are_never_overwritten(folder):
    with pytest.raises(ConfigError, match=r"ca\.key already exists"):
        init_authority(folder)
    with pytest.raises(ConfigError, match="site 'hospital-a' already has a certificate"):
        issue_site(folder, "hospital-a")


@pytest.mark.parametrize("name", ["", "-a", "a b", "a/b", "x" * 65, "é"])
def test_site_names_are_checked(name):
    with pytest.raises(ConfigError, match="must be 1–64 letters, digits"):
        check_site_name(name)


def test_bad_arguments_and_missing_files_are_config_errors(tmp_path, folder):
    with pytest.raises(ConfigError, match="certificate validity must be 1–1825 days"):
        init_authority(tmp_path / "a", days=0)
    with pytest.raises(ConfigError, match="needs at least one host"):
        init_authority(tmp_path / "b", hosts=())
    with pytest.raises(ConfigError, match=r"cannot read .*ca\.key .*veil certs init"):
        issue_site(tmp_path / "none", "hospital-b")
    with pytest.raises(ConfigError, match=r"cannot read .*hospital-z\.key"):
        site_credentials(folder, "hospital-z")
    with pytest.raises(ConfigError, match=r"cannot read .*server\.key"):
        server_credentials(tmp_path)
