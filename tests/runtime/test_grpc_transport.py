"""The same `run_round` over real gRPC on 127.0.0.1 (mTLS): coordinator and sites in threads."""

import dataclasses
import logging
import time

import numpy as np
import pytest
import torch

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment, execute
from veil.privacy.ledger import read_entries
from veil.runtime.certs import init_authority, issue_site
from veil.runtime.checkpoint import CheckpointStore, config_digest
from veil.runtime.grpc import codec
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc.board import TaskBoard
from veil.runtime.grpc.client import SiteWorker
from veil.runtime.grpc.loopback import run_on_loopback
from veil.runtime.grpc.transport import GrpcTransport, NetworkParties
from veil.secagg.messages import STAGES, KeyAdvertisement, RoundSetup

FAST = {"poll_seconds": 0.2, "round_timeout": 20, "stage_timeout": 10}
PLAIN = {
    "partition": {"method": "iid", "num_clients": 3},
    "federation": {"rounds": 2},
    "client": {"local_steps": 2, "batch_size": 16},
    "deployment": FAST,
}
SECURE = {
    **PLAIN,
    "partition": {"method": "iid", "num_clients": 4},
    "secure_aggregation": {"neighbors": 3, "threshold": 2, "clip_norm": 1.0},
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    init_authority(folder)
    for i in range(4):
        issue_site(folder, f"client_{i}")
    return folder


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    """The HTML report is tested with `veil run`; skipping its plots keeps these tests fast."""
    monkeypatch.setattr("veil.runtime.grpc.coordinator.write_report", lambda *args: None)


def final_params(config, out):
    store = CheckpointStore(out / "checkpoints", config_digest(config))
    return store.resume(None).state.params


def test_fedavg_over_grpc_reaches_the_simulators_model(tmp_path, certs):
    config = parse_config(PLAIN)
    metrics = run_on_loopback(config, tmp_path, certs)
    simulated = build_experiment(config)
    expected = execute(simulated)
    for name, value in final_params(config, tmp_path).items():
        torch.testing.assert_close(value, simulated.state.params[name], atol=1e-5, rtol=1e-5)
    assert [r["clients"] for r in metrics["rounds"]] == [3, 3]
    assert metrics["final"]["engine"] == "grpc"
    assert metrics["final"]["bytes_per_client"] == expected["final"]["bytes_per_client"]
    assert metrics["final"]["accuracy"] == pytest.approx(expected["final"]["accuracy"])


def test_secagg_with_distributed_dp_over_grpc_spends_what_the_simulator_spends(tmp_path, certs):
    private = {"noise_multiplier": 1.0, "clip_norm": 0.5, "accountant": "rdp"}
    config = parse_config({**SECURE, "privacy": private})
    metrics = run_on_loopback(config, tmp_path, certs)
    expected = execute(build_experiment(config))
    rounds = [e["round"] for e in read_entries(tmp_path / "privacy_ledger.jsonl")[1]]
    assert rounds == [1, 2]
    assert metrics["final"]["epsilon"] == pytest.approx(expected["final"]["epsilon"], rel=1e-9)
    assert metrics["final"]["claim"] == expected["final"]["claim"]
    plain_bytes = 4 * sum(v.numel() for v in final_params(config, tmp_path).values())
    assert metrics["final"]["bytes_per_client"] > plain_bytes  # keys, shares, masked input


def test_a_site_that_misses_the_deadline_is_dropped_from_that_round(
    tmp_path, certs, monkeypatch, caplog
):
    train = SiteWorker.train

    def slow(worker, task):
        if worker.index == 2 and task.round == 1:
            time.sleep(1.5)
        return train(worker, task)

    monkeypatch.setattr(SiteWorker, "train", slow)
    config = parse_config({**PLAIN, "deployment": {**FAST, "round_timeout": 1.0}})
    with caplog.at_level(logging.INFO, logger="veil"):
        metrics = run_on_loopback(config, tmp_path, certs)
    assert metrics["final"]["rounds"] == 2
    assert "round 1: 2 of 3 sampled sites sent an update (dropped: client_2)" in caplog.text
    assert "round 2: 3 of 3 sampled sites sent an update" in caplog.text
    assert "refused a reply: refused reply: reply to a task that is not open: late" in caplog.text


def test_secagg_recovers_a_site_that_drops_after_sharing_its_keys(tmp_path, certs, monkeypatch):
    step = SiteWorker.secagg_step
    dropped = []

    def crash_once(worker, task):
        if worker.index == 3 and task.secagg.HasField("forwarded_shares") and not dropped:
            dropped.append(task.round)
            raise ProtocolError("simulated crash before the masked input")
        return step(worker, task)

    monkeypatch.setattr(SiteWorker, "secagg_step", crash_once)
    config = parse_config(SECURE)
    metrics = run_on_loopback(config, tmp_path, certs)
    assert dropped == [1]
    assert metrics["final"]["rounds"] == 2 and metrics["final"]["stopped"] is None
    plain = execute(build_experiment(config))
    assert abs(metrics["final"]["accuracy"] - plain["final"]["accuracy"]) < 0.1


def test_sample_level_dp_over_grpc_records_each_sites_own_epsilon(tmp_path, certs):
    private = {"level": "sample", "noise_multiplier": 1.0, "accountant": "rdp"}
    config = parse_config({**PLAIN, "federation": {"rounds": 1}, "privacy": private})
    metrics = run_on_loopback(config, tmp_path, certs)
    entries = read_entries(tmp_path / "privacy_ledger.jsonl")[1]
    assert sorted(e["subject"] for e in entries) == ["client_0", "client_1", "client_2"]
    expected = execute(build_experiment(config))
    assert metrics["final"]["epsilon"] == pytest.approx(expected["final"]["epsilon"], rel=1e-12)
    assert metrics["final"]["epsilon"] == max(e["epsilon"] for e in entries)


def test_encrypted_aggregation_over_plaintext_grpc(tmp_path):
    config = parse_config(
        {**PLAIN, "federation": {"rounds": 1}, "encryption": {"scheme": "bfv", "clip_norm": 1.0}}
    )
    metrics = run_on_loopback(config, tmp_path)  # no certificates: --insecure
    assert "ciphertexts" in metrics["final"]["claim"]
    assert metrics["rounds"][0]["train_loss"] is None  # the sites withhold their losses
    plain = execute(build_experiment(parse_config({**PLAIN, "federation": {"rounds": 1}})))
    assert abs(metrics["final"]["accuracy"] - plain["final"]["accuracy"]) < 0.05


LIKE = {"w": torch.zeros(2, 2)}


def train_reply(**result) -> pb.Reply:
    return pb.Reply(round=1, train=pb.TrainResult(**result))


def plain(value: float, rows: int = 5, loss: float = 0.5) -> pb.Reply:
    deltas = codec.params_to_proto({"w": torch.full((2, 2), value)})
    return train_reply(num_rows=rows, loss=loss, plain=pb.PlainUpdate(deltas=deltas))


def test_the_transport_checks_each_training_reply():
    transport = GrpcTransport(TaskBoard(2), ["a", "b"], "plain", max_update_norm=1.0)
    check = transport._check_train(LIKE, site=1)
    result = check(plain(0.5))  # norm exactly 1.0
    assert result.num_rows == 5 and torch.equal(result.update["w"], torch.full((2, 2), 0.5))
    assert check(pb.Reply(refusal=pb.Refusal(reason="no"))) is None
    cases = [
        (plain(0.6), "update norm 1.2 exceeds the clip norm 1"),
        (plain(0.1, rows=0), r"num_rows must be in \[1, 2\^40\]"),
        (plain(0.1, loss=float("inf")), "the reported loss is infinite"),
        (train_reply(num_rows=1, ring=pb.RingHeld()), "sends plain updates, got ring"),
        (pb.Reply(secagg=pb.SecAggMessage()), "expected a training result, got secagg"),
    ]
    for reply, message in cases:
        with pytest.raises(ProtocolError, match=message):
            check(reply)


def test_an_encrypted_update_must_come_from_its_sender():
    transport = GrpcTransport(TaskBoard(2), ["a", "b"], "encrypted")
    update = pb.EncryptedUpdate(sender=0, key_id=b"k", length=4, chunks=[b"c"], digest=b"d")
    with pytest.raises(ProtocolError, match="claims sender 0, not 1"):
        transport._check_train(LIKE, site=1)(train_reply(num_rows=1, encrypted=update))
    assert transport._check_train(LIKE, site=0)(train_reply(num_rows=1, encrypted=update))


def test_a_round_with_fewer_updates_than_a_secure_sum_needs_fails():
    transport = GrpcTransport(TaskBoard(3), ["a", "b", "c"], "ring", min_updates=2)
    plan = build_experiment(parse_config(PLAIN)).plan  # nobody is connected: nobody answers
    with pytest.raises(ProtocolError, match="0 sites sent an update, fewer than the 2"):
        transport.collect(LIKE, np.arange(3), 1, plan, None, torch.Generator())


def test_an_unknown_update_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="update_kind must be one of"):
        GrpcTransport(TaskBoard(1), ["a"], "pickled")


def test_secagg_replies_must_match_stage_sender_and_round():
    setup = RoundSetup(b"r" * 16, (0, 1), 1, 1, 1, 32, 4, False, 0)
    parties = NetworkParties(TaskBoard(2), 1, {}, 1.0, setup=setup)
    advert = KeyAdvertisement(b"r" * 16, 1, b"c" * 32, b"m" * 32, b"")
    check = parties._check(STAGES[0], site=1)
    message, size = check(pb.Reply(secagg=codec.message_to_proto(advert)))
    assert message == advert and size > 0
    cases = [
        (parties._check(STAGES[1], 1), advert, "expected a message of stage 'share keys'"),
        (parties._check(STAGES[0], 0), advert, "claims sender 1, sent by 0"),
        (check, dataclasses.replace(advert, round_id=b"x" * 16), "from another round"),
    ]
    for site_check, sent, error in cases:
        with pytest.raises(ProtocolError, match=error):
            site_check(pb.Reply(secagg=codec.message_to_proto(sent)))
    with pytest.raises(ProtocolError, match="expected a SecAgg\\+ message"):
        check(train_reply(num_rows=1))
