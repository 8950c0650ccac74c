"""The attested aggregator over real gRPC on 127.0.0.1 (mTLS): the coordinator hosts a simulated
enclave, and each site attests it on the connection it is on before its sealed update leaves."""

import json
import logging
import shutil
import threading
import warnings

import grpc
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment, execute
from veil.fl.aggregators import weighted_mean
from veil.fl.links import ClientUpdates
from veil.randomness import InsecureNoiseWarning
from veil.runtime.certs import init_authority, issue_site, server_credentials
from veil.runtime.checkpoint import CheckpointStore, config_digest
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc import veil_pb2_grpc as rpc
from veil.runtime.grpc.attestation import (
    EnclaveEndpoint,
    EnclaveNotReady,
    attested_certificate,
    read_round_counter,
    sealed_update,
    site_policy,
    write_round_counter,
)
from veil.runtime.grpc.board import TaskBoard
from veil.runtime.grpc.client import NEEDS_MTLS, SiteAttestation, SiteOptions, SiteWorker
from veil.runtime.grpc.coordinator import ServerOptions, check_deployable, serve, update_kind
from veil.runtime.grpc.loopback import loopback, run_on_loopback
from veil.runtime.grpc.server import Admission, CoordinatorService, start_server
from veil.runtime.grpc.transport import GrpcTransport
from veil.runtime.grpc.wire import SESSION_KEY
from veil.tee.channel import SealedUpdates, ciphertext_bytes, open_updates
from veil.tee.config import TeeConfig
from veil.tee.enclave import AttestedAggregator
from veil.tee.evidence import Evidence, FreshNonces, VerifiedAggregator, verify_aggregator
from veil.tee.simulated import SimulatedBackend, SimulatedPlatform

FAST = {"poll_seconds": 0.2, "round_timeout": 20, "stage_timeout": 10}
TEE = {
    "partition": {"method": "iid", "num_clients": 3},
    "federation": {"rounds": 2},
    "client": {"local_steps": 2, "batch_size": 16},
    "privacy": {
        "noise_multiplier": 1.0,
        "clip_norm": 0.5,
        "accountant": "rdp",
        "noise_seed_for_testing": 7,  # NOT private: tests only
    },
    "aggregation": {"tee": {"backend": "simulated"}},
    "deployment": FAST,
}
SITES = ["client_0", "client_1", "client_2"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    init_authority(folder)
    for name in SITES:
        issue_site(folder, name)
    return folder


@pytest.fixture(scope="module")
def other_server(tmp_path_factory):
    """Another deployment's server certificate: a key the host does not serve."""
    folder = tmp_path_factory.mktemp("other")
    init_authority(folder)
    return server_credentials(folder)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No HTML report (tested with `veil run`); the test noise seed's warning is expected."""
    monkeypatch.setattr("veil.runtime.grpc.coordinator.write_report", lambda *args: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        yield


@pytest.fixture
def opened(monkeypatch):
    """The client ids whose sealed updates reached the enclave, one list per aggregation."""
    seen, aggregate = [], AttestedAggregator.aggregate

    def spy(enclave, updates, sealed_state):
        seen.append(sorted(int(c) for c in updates.client_ids))
        return aggregate(enclave, updates, sealed_state)

    monkeypatch.setattr(AttestedAggregator, "aggregate", spy)
    return seen


def config(**changes):
    return parse_config({**TEE, **changes})


def stop_after(round_index: int, stop: threading.Event, also=None):
    def on_round(record):
        if also is not None:
            also(record)
        if record["round"] == round_index:
            stop.set()

    return on_round


def run_sites(run_config, out, certs, site_changes=None, on_round=None, stop=None):
    """Run ``run_config`` on loopback with every site (``site_changes``: SiteOptions changes
    by site); return the metrics."""
    result = {}
    with loopback(run_config, out, certs, stop=stop, result=result, on_round=on_round) as running:
        for name in running.allowed:
            running.start_site(name, **(site_changes or {}).get(name, {}))
    if isinstance(result["metrics"], Exception):
        raise result["metrics"]
    return result["metrics"]


def final_params(run_config, out):
    return CheckpointStore(out / "checkpoints", config_digest(run_config)).resume(None).state.params


# -- over the network ------------------------------------------------------------------------


def test_a_tee_run_over_grpc_reaches_the_simulators_model(tmp_path, certs, opened):
    run_config = config()
    simulated = build_experiment(run_config)
    expected = execute(simulated)
    metrics = run_on_loopback(run_config, tmp_path, certs)
    assert opened == [[0, 1, 2]] * 4  # the simulator's two rounds, then the deployment's
    for name, value in final_params(run_config, tmp_path).items():
        torch.testing.assert_close(value, simulated.state.params[name], atol=1e-5, rtol=1e-5)
    final = metrics["final"]
    assert final["epsilon"] == pytest.approx(expected["final"]["epsilon"], rel=1e-12)
    assert final["claim"].startswith("SIMULATED enclave, NO hardware protection is in place")
    like = simulated.state.params
    assert final["bytes_per_client"] == ciphertext_bytes(like, "<f4")  # the host saw ciphertexts


def test_a_site_whose_allowlist_lacks_the_measurement_refuses_and_sends_nothing(
    tmp_path, certs, opened, monkeypatch, caplog
):
    replies, answer = [], TaskBoard.answer

    def spy(board, token, reply):
        replies.append((board.site_of(token), reply.WhichOneof("kind")))
        return answer(board, token, reply)

    monkeypatch.setattr(TaskBoard, "answer", spy)
    other_code = {"client_0": {"tee": TeeConfig(measurement="ab" * 32)}}
    with caplog.at_level(logging.INFO, logger="veil"):
        metrics = run_sites(config(), tmp_path, certs, other_code)
    assert metrics["final"]["rounds"] == 2
    assert opened == [[1, 2], [1, 2]]
    assert [kind for site, kind in replies if site == 0] == ["refusal", "refusal"]
    assert "site client_0 refuses to send its update: MeasurementNotAllowed" in caplog.text
    assert "round 1: 2 of 3 sampled sites sent an update" in caplog.text


def test_a_server_whose_tls_key_is_not_the_attested_one_is_refused(
    tmp_path, certs, other_server, opened, monkeypatch, caplog
):
    """The host serves its own certificate and relays the enclave's evidence, which binds the
    key of another certificate (the enclave's own, as with SGX)."""
    enclave_key = x509.load_pem_x509_certificate(other_server.certificate).public_key()
    evidence = AttestedAggregator.evidence

    def relayed(enclave, nonce, key=None):
        return evidence(enclave, nonce, enclave_key)

    monkeypatch.setattr(AttestedAggregator, "evidence", relayed)
    with caplog.at_level(logging.INFO, logger="veil"):
        run_sites(config(federation={"rounds": 1}), tmp_path, certs)
    assert opened == [[]]
    for site in SITES:
        assert f"site {site} refuses to send its update: KeyBindingMismatch" in caplog.text


def test_a_site_pins_the_named_certificate_so_no_other_key_can_answer(
    tmp_path, certs, other_server, opened, monkeypatch, caplog
):
    """The coordinator names a certificate it does not serve: no handshake succeeds on the
    channel pinned to it, so the site never gets evidence to check, and refuses."""
    fields = EnclaveEndpoint.join_reply_fields
    monkeypatch.setattr(
        EnclaveEndpoint,
        "join_reply_fields",
        lambda endpoint: {**fields(endpoint), "attested_certificate": other_server.certificate},
    )
    impatient = {site: {"rpc_timeout": 2.0} for site in SITES}
    with caplog.at_level(logging.INFO, logger="veil"):
        run_sites(config(federation={"rounds": 1}), tmp_path, certs, impatient)
    assert opened == [[]]
    for site in SITES:
        assert f"site {site} refuses to send its update: the enclave could not be attested" in (
            caplog.text
        )


def test_replayed_evidence_is_refused(tmp_path, certs, opened, monkeypatch, caplog):
    """A coordinator that answers every nonce with the first evidence it ever made."""
    recorded, evidence = [], AttestedAggregator.evidence

    def replay(enclave, nonce, key=None):
        if not recorded:
            recorded.append(evidence(enclave, nonce, key))
        return recorded[0]

    monkeypatch.setattr(AttestedAggregator, "evidence", replay)
    with caplog.at_level(logging.INFO, logger="veil"):
        run_sites(config(federation={"rounds": 1}), tmp_path, certs)
    assert len(opened) == 1 and len(opened[0]) == 1  # only the first asker's nonce matches
    assert caplog.text.count("refuses to send its update: ReplayedEvidence") == 2


def test_sealed_state_survives_a_restart_of_the_coordinator(tmp_path, certs, opened):
    run_config = config(federation={"rounds": 3})
    counters = {s: {"round_counter_file": tmp_path / f"{s}.json"} for s in SITES}
    stop = threading.Event()
    first = run_sites(run_config, tmp_path / "run", certs, counters, stop_after(2, stop), stop)
    assert first["final"]["rounds"] == 2 and first["final"]["stopped"] == "stopped on request"
    assert {read_round_counter(tmp_path / f"{s}.json") for s in SITES} == {1}
    restarted = run_sites(run_config, tmp_path / "run", certs, counters)  # a new enclave
    assert restarted["final"]["rounds"] == 3 and opened == [[0, 1, 2]] * 3
    assert {read_round_counter(tmp_path / f"{s}.json") for s in SITES} == {2}
    simulated = build_experiment(run_config)
    execute(simulated)
    for name, value in final_params(run_config, tmp_path / "run").items():
        torch.testing.assert_close(value, simulated.state.params[name], atol=1e-5, rtol=1e-5)


def test_a_rolled_back_coordinator_is_refused_by_sites_that_saw_a_later_round(
    tmp_path, certs, opened, caplog
):
    """The operator restarts the enclave from an older checkpoint (no ledger to object: no DP)."""
    run_config = config(privacy=None, federation={"rounds": 4})
    run, saved = tmp_path / "run", tmp_path / "round-1.json"
    counters = {s: {"round_counter_file": tmp_path / f"{s}.json"} for s in SITES}

    def keep_round_1(record):
        if record["round"] == 1:
            shutil.copy(run / "checkpoints" / "round-000001.json", saved)

    stop = threading.Event()
    run_sites(run_config, run, certs, counters, stop_after(3, stop, keep_round_1), stop)
    assert {read_round_counter(tmp_path / f"{s}.json") for s in SITES} == {2}
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    shutil.copy(saved, run / "checkpoints" / "round-000001.json")
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="veil"):
        run_sites(run_config, run, certs, counters, stop_after(2, stop), stop)
    assert opened == [[0, 1, 2]] * 3 + [[]]  # round 2 again: nobody sent the enclave anything
    for site in SITES:
        assert f"site {site} refuses to send its update: RollbackDetected" in caplog.text


# -- the pieces --------------------------------------------------------------------------------


def joined(root: bytes = b"", run_config=None) -> pb.JoinReply:
    data = (run_config or config()).model_dump(mode="json")
    return pb.JoinReply(site_index=0, config_json=json.dumps(data), simulated_root=root)


@pytest.fixture
def endpoint(certs):
    experiment = build_experiment(config())
    return EnclaveEndpoint(experiment.secure.enclave, server_credentials(certs)), experiment


def test_the_endpoint_answers_only_after_taking_up_the_sealed_state(endpoint, certs):
    served, experiment = endpoint
    nonces = FreshNonces()
    nonce = nonces.issue()
    with pytest.raises(EnclaveNotReady, match="has not taken up its sealed state yet"):
        served.evidence(nonce)
    assert served.resume(experiment.state.aggregator_state) == 0
    tls_key = attested_certificate(served.certificate).public_key()
    policy = experiment.secure.clients.policy
    verified = verify_aggregator(served.evidence(nonce), nonce, tls_key, policy, nonces=nonces)
    assert verified.round_counter == 0
    assert verified.channel_key == served.enclave.channel_public_key.public_bytes_raw()
    fields = served.join_reply_fields()
    assert fields["attested_certificate"] == served.certificate
    assert x509.load_pem_x509_certificate(fields["simulated_root"]) == policy.root
    with pytest.raises(ConfigError, match=r"aggregation\.tee needs mTLS \(--certs\)"):
        EnclaveEndpoint(served.enclave, None)


def test_a_simulated_enclave_cannot_open_what_another_process_sealed(endpoint):
    served, experiment = endpoint
    backend = served.enclave.backend
    elsewhere = SimulatedBackend(SimulatedPlatform(), backend.measurement)  # another "CPU"
    sealed = AttestedAggregator(elsewhere, weighted_mean()).init(experiment.state.params)
    with pytest.raises(ConfigError, match="a new `veil server` process cannot open what an"):
        served.resume(sealed)


def test_the_attest_call_refuses_what_it_cannot_answer(endpoint, certs):
    served, experiment = endpoint
    answered = {}
    for name, attestation in (("none", None), ("tee", served)):
        service = CoordinatorService(
            TaskBoard(3), Admission(SITES, frozenset(SITES), secure=False), "{}",
            attestation=attestation,
        )  # fmt: skip
        server, port = start_server(service, "127.0.0.1:0", None)
        stub = rpc.CoordinatorStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        session = stub.Join(pb.JoinRequest(site="client_0", identity_key=bytes(32))).session
        metadata = ((SESSION_KEY, session),)

        def attest(nonce, stub=stub, metadata=metadata):
            try:
                return stub.Attest(pb.AttestRequest(nonce=nonce), metadata=metadata)
            except grpc.RpcError as error:
                return error.code(), error.details()

        answered[name] = attest(bytes(32))
        if attestation is not None:
            answered["short nonce"] = attest(b"short")
            served.resume(experiment.state.aggregator_state)
            answered["ready"] = attest(bytes(32))
        server.stop(0)
    assert answered["none"] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "this run has no attested aggregator",
    )
    assert answered["tee"][0] == grpc.StatusCode.UNAVAILABLE  # not resumed yet: retry
    code, details = answered["short nonce"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "32 random bytes" in details
    assert Evidence.from_bytes(answered["ready"].evidence).nonce == bytes(32)


def test_a_site_pins_exactly_one_server_certificate(certs):
    server = server_credentials(certs)
    assert attested_certificate(server.certificate).public_key() is not None
    with pytest.raises(ProtocolError, match="is a CA: a site pins a server's own"):
        attested_certificate(server.authority)
    with pytest.raises(ProtocolError, match="named 2 attested certificates, not exactly one"):
        attested_certificate(server.certificate + server.authority)
    with pytest.raises(ProtocolError, match="not PEM"):
        attested_certificate(b"")


def test_a_sites_policy_is_its_own_unless_it_has_none(endpoint, caplog):
    served, _ = endpoint
    root = served.join_reply_fields()["simulated_root"]
    with caplog.at_level(logging.WARNING, logger="veil.tee"):
        theirs = site_policy(config(), None, joined(root))
    assert "the attestation policy comes from the coordinator's run config" in caplog.text
    assert theirs.measurements == {served.enclave.backend.measurement}
    own = site_policy(config(), TeeConfig(measurement="ab" * 32), joined(root))
    assert own.measurements == {bytes.fromhex("ab" * 32)} and not own.hardware
    with pytest.raises(ProtocolError, match="sent no simulated attestation root"):
        site_policy(config(), None, joined())
    with pytest.raises(ProtocolError, match="simulated attestation root is not PEM"):
        site_policy(config(), None, joined(b"-----BEGIN CERTIFICATE-----"))


def test_a_sealed_update_opens_only_for_the_verified_key_and_round(endpoint):
    _, experiment = endpoint
    like = experiment.state.params
    ones = {k: torch.ones(1, *v.shape) for k, v in like.items()}
    updates = ClientUpdates(ones, torch.tensor([5.0]), torch.tensor([2]))
    enclave_key = X25519PrivateKey.generate()
    raw = enclave_key.public_key().public_bytes_raw()
    verified = VerifiedAggregator(bytes(32), "sgx", False, False, "UpToDate", 3, raw)
    sealed = sealed_update(updates, verified)
    assert sealed.round_counter == 3 and len(sealed.ciphertext) == ciphertext_bytes(like, "<f4")
    shell = ClientUpdates({}, updates.weights, updates.client_ids)
    batch = SealedUpdates(
        {}, shell.weights, shell.client_ids, (sealed.ciphertext,), shell, "<f4", like, 3
    )
    opened = open_updates(batch, enclave_key, 3)
    assert all(torch.equal(opened.deltas[k], v) for k, v in ones.items())
    with pytest.raises(ProtocolError, match="does not open in the enclave"):
        open_updates(batch, enclave_key, 2)
    with pytest.raises(ProtocolError, match="binds no channel key to encrypt the update to"):
        sealed_update(updates, VerifiedAggregator(bytes(32), "sgx", False, False, "UpToDate", 3))


def test_the_transport_checks_the_counter_and_length_of_sealed_updates(endpoint):
    _, experiment = endpoint
    like = experiment.state.params
    check = GrpcTransport(TaskBoard(3), SITES, "sealed")._check_train(like, site=1)
    size = ciphertext_bytes(like, "<f4")

    def reply(counter, length):
        sealed = pb.SealedUpdate(ciphertext=bytes(length), round_counter=counter)
        return pb.Reply(round=3, train=pb.TrainResult(num_rows=4, loss=0.1, sealed=sealed))

    assert check(reply(2, size)).update == bytes(size)
    with pytest.raises(ProtocolError, match="sealed for enclave round counter 1, not 2"):
        check(reply(1, size))
    with pytest.raises(ProtocolError, match=f"sealed update of 7 bytes, not the {size}"):
        check(reply(2, 7))


def test_the_round_counter_file_survives_and_refuses_garbage(tmp_path):
    path = tmp_path / "counter.json"
    assert read_round_counter(path) == 0 and read_round_counter(None) == 0
    write_round_counter(path, 4)
    write_round_counter(None, 9)
    assert read_round_counter(path) == 4
    path.write_text("{}")
    with pytest.raises(ConfigError, match="does not hold an aggregator round counter"):
        read_round_counter(path)


def test_an_attested_run_needs_mtls_on_both_sides(tmp_path, certs):
    with pytest.raises(ConfigError, match=r"aggregation\.tee needs mTLS \(--certs\)"):
        serve(config(), ServerOptions(tmp_path, None))
    with pytest.raises(ConfigError, match=r"needs mTLS \(--certs\)"):
        SiteWorker(joined(), "client_0", None)
    with pytest.raises(ConfigError, match=r"needs mTLS \(--certs\)"):
        SiteAttestation(SiteOptions("127.0.0.1:1", "client_0", None))
    assert NEEDS_MTLS.startswith("this run's aggregator is attested")


def test_a_deployment_takes_tee_alone_but_not_with_secure_aggregation():
    check_deployable(config())
    assert update_kind(config()) == "sealed"
    secure = {"neighbors": 2, "threshold": 2, "clip_norm": 1.0}
    with pytest.raises(
        ConfigError, match=r"aggregation\.tee with secure_aggregation is not deploy"
    ):
        check_deployable(config(privacy=None, secure_aggregation=secure))
