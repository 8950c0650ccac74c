import dataclasses
import statistics

import pytest
import torch
import yaml
from cryptography.hazmat.primitives import serialization

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment, execute
from veil.fl import init_server_state
from veil.fl.aggregators import weighted_mean
from veil.fl.links import Link, identity
from veil.tee.channel import SealedUpdates
from veil.tee.federated import IN_THE_CLEAR, attestation_policy, enclave_backend, tee_plan
from veil.tee.measurement import measure_aggregator
from veil.tee.sgx_dcap import GramineBackend

from .conftest import EXAMPLES

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")


def with_tee(config):
    """The experiment of ``config``: `build_experiment` wraps its chains with `tee_plan`."""
    return build_experiment(config)


def test_dp_noise_is_added_inside_the_enclave_and_the_claim_says_so(tee_config):
    experiment = with_tee(tee_config())
    final = execute(experiment)["final"]
    claim = final["claim"]
    assert claim.startswith("SIMULATED enclave, NO hardware protection is in place: ")
    assert "(ε = " in claim and "the noise added inside the enclave" in claim
    assert IN_THE_CLEAR.strip("; .") not in claim and "can read every update" in claim
    assert final["rounds"] == 2 and final["epsilon"] is not None
    section = experiment.secure.report_section()
    assert "SIMULATED" in section.html and "<script" not in section.html


def test_operator_sees_updates_in_the_clear_without_tee_and_ciphertexts_with_it(tee_config):
    config = tee_config()
    seen = {}

    def spy(experiment, label):
        inner = experiment.plan.aggregator

        def apply(updates, state, key):
            seen[label] = updates
            return inner.apply(updates, state, key)

        experiment.plan = dataclasses.replace(experiment.plan, aggregator=Link(inner.init, apply))
        experiment.state = init_server_state(experiment.state.params, experiment.plan)
        return experiment

    plain = config.model_dump(mode="json")
    plain["aggregation"]["tee"] = None
    execute(spy(build_experiment(parse_config(plain)), "plain"))
    execute(spy(with_tee(config), "tee"))
    assert seen["plain"].deltas and not isinstance(seen["plain"], SealedUpdates)
    assert isinstance(seen["tee"], SealedUpdates) and seen["tee"].deltas == {}
    update = next(iter(seen["plain"].deltas.values()))[0].numpy().tobytes()[:16]
    assert all(update not in c for c in seen["tee"].ciphertexts)


def test_without_dp_the_claim_offers_no_formal_guarantee(tee_config):
    experiment = with_tee(tee_config(privacy=None))
    claim = execute(experiment)["final"]["claim"]
    assert "No differential privacy: the aggregator's attestation was only simulated" in claim


def test_secagg_inside_the_enclave_is_defence_in_depth(tee_config):
    data = yaml.safe_load(EXAMPLES.joinpath("hospitals_secagg.yaml").read_text())
    config = tee_config(secure_aggregation=data["secure_aggregation"])
    final = execute(with_tee(config))["final"]
    assert "masked sum of at least 3 clients" in final["claim"]
    assert "; as defence in depth, the aggregator's attestation" in final["claim"]


def test_encryption_cannot_be_wrapped(tee_config):
    with pytest.raises(ConfigError, match=r"aggregation\.tee cannot wrap encryption"):
        tee_config(privacy=None, encryption={"scheme": "paillier", "clip_norm": 1.0})


def test_clients_refuse_an_aggregator_not_on_the_allowlist(tee_config):
    experiment = with_tee(tee_config({"backend": "simulated", "measurement": "ab" * 32}))
    with pytest.raises(ProtocolError, match=r"client 0 refused .* MeasurementNotAllowed"):
        execute(experiment)


def test_clients_accept_the_measurement_veil_tee_measure_prints(tee_config):
    config = tee_config()
    published = measure_aggregator(config.model_dump(mode="json")).hex  # `veil tee measure`
    pinned = tee_config({"backend": "simulated", "measurement": published})
    assert execute(with_tee(pinned))["final"]["rounds"] == 2


@pytest.mark.parametrize("allow_debug", [False, True])
def test_debug_enclave_only_with_allow_debug(tee_config, allow_debug):
    experiment = with_tee(tee_config({"debug": True, "allow_debug": allow_debug}))
    if allow_debug:
        assert execute(experiment)["final"]["rounds"] == 2
    else:
        with pytest.raises(ProtocolError, match="DebugEnclaveRefused"):
            execute(experiment)


def test_sgx_dcap_outside_an_enclave_is_refused(tee_config, tmp_path):
    settings = {
        "backend": "sgx-dcap",
        "measurement": "ab" * 32,
        "root_certificate": str(tmp_path / "root.pem"),
        "collateral": str(tmp_path),
    }
    with pytest.raises(ConfigError, match="must run inside Gramine-SGX"):
        with_tee(tee_config(settings))


def test_the_example_parses_with_the_tee_section():
    data = yaml.safe_load(EXAMPLES.joinpath("hospitals_tee.yaml").read_text())
    config = parse_config(data)
    assert config.name == "hospitals_tee" and config.aggregation.tee.backend == "simulated"


@pytest.mark.slow
def test_tee_hospitals_reach_0_90_with_noise_in_the_enclave():
    """Central DP-FedAvg noise added in the enclave: the same mechanism as hospitals.yaml, so
    the median over three test noise draws must reach 0.90."""
    data = yaml.safe_load(EXAMPLES.joinpath("hospitals_tee.yaml").read_text())
    accuracies = []
    for seed in range(3):
        data["privacy"]["noise_seed_for_testing"] = seed
        final = execute(with_tee(parse_config(data)))["final"]
        assert final["epsilon"] <= 8.0
        accuracies.append(final["accuracy"])
    assert statistics.median(accuracies) >= 0.90, accuracies


def test_hardware_claim_names_the_enclave_and_what_it_trusts(
    tee_config, monkeypatch, fake_gramine, backend, platform, collateral_dir, tmp_path
):
    fake = fake_gramine(backend)
    monkeypatch.setattr(
        "veil.tee.federated.GramineBackend",
        lambda collateral: GramineBackend(collateral, attestation_dir=fake.root),
    )
    root = tmp_path / "root.pem"
    root.write_bytes(platform.root.public_bytes(serialization.Encoding.PEM))
    settings = {
        "backend": "sgx-dcap",
        "measurement": backend.measurement.hex(),
        "root_certificate": str(root),
        "collateral": str(collateral_dir),
    }
    config = tee_config(settings, privacy=None)
    plan = tee_plan(config, identity(), weighted_mean())
    claim = plan.claim(config, None, None, 0)
    assert claim.startswith("No differential privacy: the aggregator runs in an Intel SGX enclave")
    assert "TCB UpToDate, production mode" in claim and "does not cover side channels" in claim
    assert "SIMULATED" not in claim and "SIMULATED" not in plan.report_section().html


def test_sample_level_dp_keeps_its_own_sentence_and_adds_the_enclave(tee_config):
    privacy = {"level": "sample", "noise_multiplier": 1.0, "clip_norm": 1.0}
    privacy = {**privacy, "accountant": "rdp", "noise_seed_for_testing": 0}
    client = {"local_steps": 1, "batch_size": 16, "lr": 0.1}
    config = tee_config(privacy=privacy, client=client, federation={"rounds": 1})
    claim = execute(with_tee(config))["final"]["claim"]
    assert "Every training record is (ε = " in claim and "sample-level DP-SGD" in claim
    assert claim.endswith("so the operator can read every update.")


def test_simulated_enclaves_of_one_process_share_a_platform_so_sealed_state_survives(tee_config):
    config = tee_config()
    (first, policy), (second, _) = (enclave_backend(config.aggregation.tee, config) for _ in "ab")
    assert first.platform is second.platform and first.measurement == second.measurement
    before = tee_plan(config, identity(), weighted_mean()).enclave  # a coordinator ...
    sealed = before.init({"w": torch.zeros(2)})
    after = tee_plan(config, identity(), weighted_mean()).enclave  # ... restarted in-process
    after.init({"w": torch.zeros(2)})
    assert after.resume(sealed) == 0
    assert policy.root == first.platform.root and not policy.hardware


def test_the_simulated_policy_needs_the_platforms_root(tee_config):
    config = tee_config()
    with pytest.raises(ConfigError, match="needs the simulated platform's root"):
        attestation_policy(config.aggregation.tee, config)
