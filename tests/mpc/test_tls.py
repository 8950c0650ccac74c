import threading

import numpy as np
import pytest
from cryptography import x509

from veil.errors import ProtocolError
from veil.mpc.channel import decode_frame, encode_frame
from veil.mpc.tls import TlsNetwork, issue_party_credentials, party_name


def connect_all(credentials, deadline=5.0):
    """Networks and links of every party, connected the way the runner does it."""
    networks = [TlsNetwork(i, c, deadline) for i, c in enumerate(credentials)]
    ports = {i: n.port for i, n in enumerate(networks)}
    links, errors = [None] * len(networks), []

    def connect(i):
        try:
            links[i] = networks[i].connect(ports)
        except ProtocolError as error:
            errors.append(error)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(len(networks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return networks, links, errors


def test_credentials_name_each_party_and_chain_to_one_authority():
    credentials = issue_party_credentials(3)
    authority = x509.load_pem_x509_certificate(credentials[0].authority)
    for i, c in enumerate(credentials):
        certificate = x509.load_pem_x509_certificate(c.certificate)
        assert certificate.subject.rfc4514_string() == f"CN={party_name(i)}"
        certificate.verify_directly_issued_by(authority)


def test_parties_exchange_frames_over_mutual_tls_and_see_a_departure():
    networks, links, errors = connect_all(issue_party_credentials(3))
    try:
        assert not errors and sorted(links[0]) == [1, 2] and sorted(links[2]) == [0, 1]
        links[2][0].send(encode_frame(0, np.arange(5, dtype=np.uint64)))
        assert np.array_equal(decode_frame(links[0][2].receive(5.0)).array, np.arange(5))
        links[1][0].close()
        with pytest.raises(ProtocolError, match="peer disconnected"):
            links[0][1].receive(5.0)
    finally:
        for party_links in links:
            for link in (party_links or {}).values():
                link.close()
        for network in networks:
            network.close()


def test_a_certificate_from_another_session_is_refused():
    ours, theirs = issue_party_credentials(2), issue_party_credentials(2)
    networks, links, errors = connect_all([ours[0], theirs[1]], deadline=0.5)
    try:
        assert errors and all(isinstance(e, ProtocolError) for e in errors)
    finally:
        for party_links in links:
            for link in (party_links or {}).values():
                link.close()
        for network in networks:
            network.close()
