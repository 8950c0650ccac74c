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


def connected_pair():
    """Party 0's link to party 1 and party 1's link to party 0, and a function closing all."""
    networks, links, errors = connect_all(issue_party_credentials(2))
    assert not errors

    def close():
        for party_links in links:
            for link in party_links.values():
                link.close()
        for network in networks:
            network.close()

    return links[0][1], links[1][0], close


def test_both_ends_sending_large_frames_before_receiving_do_not_deadlock():
    first, second, close = connected_pair()
    big = np.arange(2**22, dtype=np.uint64)  # 32 MiB each way, more than the socket buffers
    received = {}

    def other_end():
        second.send(encode_frame(0, big))
        received["second"] = decode_frame(second.receive(20.0)).array

    thread = threading.Thread(target=other_end)
    try:
        thread.start()
        first.send(encode_frame(0, big + 1))
        received["first"] = decode_frame(first.receive(20.0)).array
        thread.join(timeout=30)
        assert np.array_equal(received["first"], big)
        assert np.array_equal(received["second"], big + 1)
    finally:
        close()


def test_silence_and_bytes_that_are_not_frames_are_protocol_errors():
    first, second, close = connected_pair()
    try:
        with pytest.raises(ProtocolError, match=r"no message from the peer within 0\.05 s"):
            first.receive(0.05)
        second.send(b"not a frame, but long enough for a header")
        for _ in range(2):
            with pytest.raises(ProtocolError, match="not a veil MPC frame"):
                first.receive(5.0)
    finally:
        close()


def test_frames_sent_before_a_close_arrive_before_the_departure():
    first, second, close = connected_pair()
    try:
        second.send(encode_frame(0, reason="giving up"))
        second.close()
        assert decode_frame(first.receive(5.0)).reason == "giving up"
        with pytest.raises(ProtocolError, match="peer disconnected"):
            first.receive(5.0)
    finally:
        close()


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
