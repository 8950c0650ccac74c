"""Admission (mTLS, allowlist, sessions) and bad input at the coordinator's gRPC service."""

import logging
import threading
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import torch

from veil.errors import ConfigError
from veil.runtime.certs import init_authority, issue_site, server_credentials, site_credentials
from veil.runtime.grpc import codec
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc import veil_pb2_grpc as rpc
from veil.runtime.grpc.board import TaskBoard
from veil.runtime.grpc.server import Admission, CoordinatorService, start_server
from veil.runtime.grpc.wire import SESSION_KEY, Limits, channel_credentials, from_chunks, to_chunks

NAMES = ["client_0", "client_1", "client_2"]
LIMITS = Limits(chunk_bytes=1024, max_message_bytes=64 * 1024)
KEY = b"k" * 32


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    init_authority(folder)
    for name in NAMES:
        issue_site(folder, name)
    return folder


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other")
    init_authority(folder)
    issue_site(folder, "client_0")
    return folder


def serving(certs, secure=True, allowed=("client_0", "client_1")):
    board = TaskBoard(len(NAMES))
    admission = Admission(NAMES, frozenset(allowed), secure)
    service = CoordinatorService(board, admission, '{"name": "t"}', None, LIMITS, 0.1)
    credentials = server_credentials(certs) if secure else None
    server, port = start_server(service, "127.0.0.1:0", credentials, LIMITS)
    return server, port, board


@pytest.fixture
def secure_server(certs):
    server, port, board = serving(certs)
    yield port, board
    server.stop(0)


def stub(port, folder=None, site=None):
    target = f"127.0.0.1:{port}"
    if folder is None:
        channel = grpc.insecure_channel(target, options=LIMITS.options())
    else:
        credentials = channel_credentials(site_credentials(folder, site))
        channel = grpc.secure_channel(target, credentials, LIMITS.options())
    return rpc.CoordinatorStub(channel)


def code_and_details(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_a_site_with_a_certificate_from_the_ca_joins(secure_server, certs):
    port, board = secure_server
    reply = stub(port, certs, "client_1").Join(pb.JoinRequest(site="client_1", identity_key=KEY))
    assert reply.site_index == 1 and reply.config_json == '{"name": "t"}'
    assert board.identities() == {1: KEY} and len(reply.session) == 16


def test_a_site_off_the_allowlist_is_refused_with_one_log_line(secure_server, certs, caplog):
    port, _ = secure_server
    with caplog.at_level(logging.WARNING, logger="veil.server"):
        code, details = code_and_details(
            lambda: stub(port, certs, "client_2").Join(pb.JoinRequest(site="client_2"))
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (
        details
        == "site 'client_2' refused: its certificate is valid but it is not on the allowlist"
    )
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("refused site 'client_2' from ipv4:127.0.0.1:")


def test_a_certificate_cannot_claim_another_site(secure_server, certs):
    port, _ = secure_server
    code, details = code_and_details(
        lambda: stub(port, certs, "client_0").Join(pb.JoinRequest(site="client_1"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "its certificate is for 'client_0', not 'client_1'" in details


@pytest.mark.parametrize("who", ["another CA", "no certificate"])
def test_a_stranger_never_gets_past_the_tls_handshake(secure_server, certs, other_ca, who):
    port, board = secure_server
    if who == "another CA":
        client = stub(port, other_ca, "client_0")
    else:
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
        )
        client = rpc.CoordinatorStub(channel)
    code, _ = code_and_details(lambda: client.Join(pb.JoinRequest(site="client_0"), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE and board.identities() == {}


def test_tls_1_3_is_required():
    board = TaskBoard(1)
    service = CoordinatorService(board, Admission(["a"], frozenset({"a"})), "{}")

    def abort(code, details):
        raise PermissionError(code, details)

    context = SimpleNamespace(
        auth_context=lambda: {"ssl_tls_version": [b"TLSv1.2"], "x509_common_name": [b"a"]},
        peer=lambda: "ipv4:10.0.0.1:5",
        abort=abort,
    )
    with pytest.raises(PermissionError) as refused:
        service._admit(context, "a")
    assert refused.value.args == (
        grpc.StatusCode.PERMISSION_DENIED,
        "site 'a' refused: TLSv1.3 is required (the connection uses TLSv1.2)",
    )


def test_plaintext_admits_allowlisted_names_only(certs):
    server, port, _ = serving(certs, secure=False)
    try:
        client = stub(port)
        assert client.Join(pb.JoinRequest(site="client_0", identity_key=KEY)).site_index == 0
        code, details = code_and_details(lambda: client.Join(pb.JoinRequest(site="client_2")))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not on the allowlist" in details
    finally:
        server.stop(0)


def test_an_identity_key_must_be_an_ed25519_public_key(secure_server, certs):
    port, _ = secure_server
    code, details = code_and_details(
        lambda: stub(port, certs, "client_0").Join(
            pb.JoinRequest(site="client_0", identity_key=b"x")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "32-byte Ed25519" in details


def test_pull_and_push_need_a_session_of_the_same_site(secure_server, certs):
    port, _ = secure_server
    client = stub(port, certs, "client_0")
    unknown = ((SESSION_KEY, b"?" * 16),)
    code, details = code_and_details(lambda: list(client.Pull(pb.PullRequest(), metadata=unknown)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "join again" in details
    chunks = to_chunks(pb.Reply(), LIMITS)
    code, _ = code_and_details(lambda: client.Push(chunks, metadata=unknown))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    token = client.Join(pb.JoinRequest(site="client_0", identity_key=KEY)).session
    other = stub(port, certs, "client_1")
    code, details = code_and_details(
        lambda: list(other.Pull(pb.PullRequest(), metadata=((SESSION_KEY, token),)))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "its certificate is for 'client_1', not 'client_0'" in details


def test_a_large_task_streams_to_its_site_and_the_answer_comes_back(secure_server, certs):
    port, board = secure_server
    client = stub(port, certs, "client_0")
    token = client.Join(pb.JoinRequest(site="client_0", identity_key=KEY)).session
    metadata = ((SESSION_KEY, token),)
    like = {"w": torch.zeros(40, 30)}  # 4.8 kB: five chunks
    answers = {}
    worker = threading.Thread(
        target=lambda: answers.update(
            board.exchange(
                {0: (pb.Task(round=1, train=pb.Train(params=codec.params_to_proto(like))), _rows)},
                timeout=10,
            )
        )
    )
    worker.start()
    task = None
    while task is None or task.HasField("idle"):
        task = from_chunks(client.Pull(pb.PullRequest(), metadata=metadata), pb.Task, LIMITS)
    assert codec.params_from_proto(task.train.params, like)["w"].shape == (40, 30)
    reply = pb.Reply(task_id=task.task_id, round=1, train=pb.TrainResult(num_rows=7))
    client.Push(to_chunks(reply, LIMITS), metadata=metadata)
    worker.join()
    assert answers == {0: 7}


def _rows(reply):
    return reply.train.num_rows


def test_no_key_or_session_token_is_logged(certs, caplog):
    server, port, _ = serving(certs)
    try:
        with caplog.at_level(logging.DEBUG):
            client = stub(port, certs, "client_0")
            token = client.Join(pb.JoinRequest(site="client_0", identity_key=KEY)).session
            list(client.Pull(pb.PullRequest(), metadata=((SESSION_KEY, token),)))
            code_and_details(lambda: stub(port, certs, "client_2").Join(pb.JoinRequest()))
    finally:
        server.stop(0)
    text = caplog.text
    assert "client_0 joined" in text and "refused site 'client_2'" in text  # refusals logged
    secrets = [token.hex(), repr(token), KEY.decode(), "PRIVATE KEY"]
    secrets += [line for line in (certs / "sites" / "client_0.key").read_text().splitlines()[1:-1]]
    assert not [s for s in secrets if s in text]


def test_a_busy_port_is_a_config_error(certs):
    server, port, _ = serving(certs)
    try:
        board = TaskBoard(1)
        service = CoordinatorService(board, Admission(["a"], frozenset({"a"}), False), "{}")
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_server(service, f"127.0.0.1:{port}", None)
    finally:
        server.stop(0)


def test_oversized_and_malformed_pushes_are_invalid_arguments(secure_server, certs):
    port, _ = secure_server
    client = stub(port, certs, "client_0")
    metadata = (
        (SESSION_KEY, client.Join(pb.JoinRequest(site="client_0", identity_key=KEY)).session),
    )
    big = (pb.Chunk(data=b"\x00" * 1024) for _ in range(65))
    code, details = code_and_details(lambda: client.Push(big, metadata=metadata))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "refused reply: Reply larger than the limit of 65536 bytes"
    code, details = code_and_details(
        lambda: client.Push(iter([pb.Chunk(data=b"\xff\xff")]), metadata=metadata)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "do not parse" in details
    frame = iter([pb.Chunk(data=np.zeros(200_000, np.uint8).tobytes())])  # one frame too big
    code, _ = code_and_details(lambda: client.Push(frame, metadata=metadata))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own per-message limit
