"""The site: what it refuses, and how it survives the coordinator going away."""

import dataclasses
import json
import threading

import pytest

from veil.errors import ConfigError, ProtocolError
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc.board import TaskBoard
from veil.runtime.grpc.client import SiteOptions, SiteWorker, run_site
from veil.runtime.grpc.server import Admission, CoordinatorService, start_server
from veil.runtime.grpc.wire import Backoff
from veil.secagg.keys import new_identity, public_identity
from veil.secagg.messages import RoundSetup

SECURE = {
    "partition": {"method": "iid", "num_clients": 4},
    "client": {"local_steps": 1},
    "secure_aggregation": {"neighbors": 3, "threshold": 2, "clip_norm": 1.0},
}


def joined(config: dict, index: int = 1) -> pb.JoinReply:
    return pb.JoinReply(session=b"s", site_index=index, config_json=json.dumps(config))


@pytest.fixture(scope="module")
def worker():
    return SiteWorker(joined(SECURE), "client_1", new_identity())


def good_setup(worker) -> tuple[RoundSetup, dict[int, bytes]]:
    setup = RoundSetup(b"r" * 16, (0, 1, 2, 3), 3, 2, 2, 32, worker.length, False, 5)
    identities = {c: public_identity(new_identity()) for c in (0, 2, 3)}
    return setup, {**identities, 1: public_identity(worker.identity)}


def test_a_site_accepts_the_setup_its_config_promises(worker):
    worker._check_setup(*good_setup(worker))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 1}, "SecAgg\\+ threshold is 1, the run config's 2"),
        ({"min_survivors": 1}, "min_survivors is 1, the run config's 2"),
        ({"bits": 16}, "bits is 16, the run config's 32"),
        ({"hybrid": True}, "hybrid is True"),
        ({"length": 3}, "length is 3"),
        ({"neighbours": 4}, "more neighbours \\(4\\) than the run config's"),
    ],
)
def test_a_site_refuses_weaker_secagg_parameters(worker, change, message):
    setup, identities = good_setup(worker)
    with pytest.raises(ProtocolError, match=message):
        worker._check_setup(dataclasses.replace(setup, **change), identities)


def test_a_site_refuses_a_round_without_its_own_key_or_a_peers(worker):
    setup, identities = good_setup(worker)
    with pytest.raises(ProtocolError, match="does not list this site with its own identity key"):
        worker._check_setup(setup, {**identities, 1: b"x" * 32})
    del identities[3]
    with pytest.raises(ProtocolError, match="lacks the identity key of one of its clients"):
        worker._check_setup(setup, identities)


def test_secagg_stages_out_of_a_round_are_refused(worker):
    task = pb.Task(round=1, secagg=pb.SecAggRequest(unmask_request=pb.UnmaskRequest()))
    reply = worker.handle(task)
    assert reply.refusal.reason == "no SecAgg+ round in progress on this site"


def test_a_run_without_secure_aggregation_refuses_secagg_tasks():
    plain = SiteWorker(joined({"partition": {"num_clients": 2}}, 0), "client_0", new_identity())
    setup = pb.SecAggRequest(start=pb.SecAggStart(setup=pb.RoundSetup()))
    reply = plain.handle(pb.Task(round=1, secagg=setup))
    assert reply.refusal.reason == "this run has no secure aggregation"


def test_a_site_given_another_sites_id_refuses_to_start():
    with pytest.raises(ConfigError, match="assigned client id 1, not site 'client_0'"):
        SiteWorker(joined(SECURE, 1), "client_0", new_identity())


def test_a_coordinator_that_never_answers_makes_the_site_give_up():
    options = SiteOptions("127.0.0.1:9", "client_0", None, backoff=Backoff(0.01, 2, 0.05))
    with pytest.raises(ProtocolError, match=r"cannot reach the coordinator at 127\.0\.0\.1:9"):
        run_site(dataclasses.replace(options, give_up_after=0.3, rpc_timeout=0.2))


def coordinator(port: int = 0):
    board = TaskBoard(1)
    config = json.dumps({"partition": {"num_clients": 1}})
    service = CoordinatorService(
        board, Admission(["client_0"], frozenset({"client_0"}), False), config, poll_seconds=0.1
    )
    server, port = start_server(service, f"127.0.0.1:{port}", None)
    return server, port, board


def test_a_site_joins_again_by_itself_after_the_coordinator_restarts():
    server, port, board = coordinator()
    options = SiteOptions(f"127.0.0.1:{port}", "client_0", None, backoff=Backoff(0.05, 2, 0.2))
    outcome = []
    site = threading.Thread(target=lambda: outcome.append(run_site(options)))
    site.start()
    assert board.wait_for_sites(1, timeout=20)
    server.stop(0).wait()  # the coordinator dies ...
    server, _, board = coordinator(port)  # ... and a new one (no sessions) takes its place
    try:
        assert board.wait_for_sites(1, timeout=20)  # FAILED_PRECONDITION, then a new Join
        board.finish("done")
        site.join(timeout=20)
    finally:
        server.stop(0)
    assert outcome == ["done"]


def test_a_site_refused_by_the_coordinator_stops_with_its_reason():
    server, port, _ = coordinator()
    try:
        with pytest.raises(ConfigError, match=r"refused site 'client_7'.*not on the allowlist"):
            run_site(SiteOptions(f"127.0.0.1:{port}", "client_7", None))
    finally:
        server.stop(0)


def test_loss_and_row_count_stay_on_the_site_when_the_run_protects_them(worker):
    assert worker.withhold_loss and not worker.disclose_rows  # SecAgg+: only the sum leaves
    plain = SiteWorker(joined({"partition": {"num_clients": 2}}, 0), "client_0", new_identity())
    assert not plain.withhold_loss and plain.disclose_rows  # FedAvg weights by row count
    sample_dp = {**SECURE, "privacy": {"level": "sample", "noise_multiplier": 1.0}}
    private = SiteWorker(joined(sample_dp), "client_1", new_identity())
    assert private.withhold_loss and private.disclose_rows  # DP-SGD accounting needs it
