"""White-box canary audits of veil's DP-SGD and DP-FedAvg (Nasr, Hayes, Steinke, Balle, Tramèr,
Jagielski, Carlini, Terzis 2023, "Tight Auditing of Differentially Private Machine Learning").

The auditor inserts a *gradient canary* (DP-SGD: one example whose gradient is a Dirac vector of
norm ≥ C on one coordinate; DP-FedAvg: one client whose update is such a vector) into half of
many independent training runs, sees every step's noisy release (white box), and scores each run
by the log-likelihood ratio of its releases' projections y_t on the canary direction:

    Σ_t log(1 − q + q·exp((2y_t − 1) / (2σ_t²))),    y_t in units of the clip norm C,

the Neyman–Pearson statistic of "canary in" (each step: N(1, σ_t²) with probability q, else
N(0, σ_t²)) against "out" (N(0, σ_t²)); for q = 1 it orders runs as Σ_t y_t/σ_t² does. The
runs' scores give a Clopper–Pearson lower bound on ε (`veil.audit.bounds`), compared with the
ε that veil's privacy ledger reports for the same events. Threat model audited: the adversary
knows (here: zeroes) every other record's or client's contribution and sees every release.

Runs are batched: run r's canary lives on its own coordinate r, so one call of veil's own
mechanism (`veil.privacy.dpsgd.noisy_average` with `poisson_sample` batches, or the DP-FedAvg
links `clip_l2` and `gaussian_sum` with `PoissonSampler` client sampling) releases the steps of
many runs at once; its noise is i.i.d. per coordinate, so the runs are independent. Noise and
sampling come from `veil.randomness` (OS entropy unless ``noise_seed_for_testing``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from veil.audit.black_box import DEFAULT_NUM_RUNS as BLACK_BOX_RUNS
from veil.audit.black_box import audit_dpsgd_black_box
from veil.audit.result import AuditResult, check_num_runs, ledger_epsilon
from veil.config import RunConfig
from veil.errors import check
from veil.experiment import Experiment, build_experiment
from veil.fl.links import ClientUpdates
from veil.fl.sampling import PoissonSampler
from veil.privacy.accounting import dpsgd_event
from veil.privacy.client_dp import clip_l2, gaussian_sum, poisson_sampling
from veil.privacy.dpsgd import noisy_average
from veil.privacy.dpsgd_sampling import poisson_sample
from veil.privacy.ledger import LedgerSettings, PrivacyLedger
from veil.privacy.per_sample import clip_factors
from veil.randomness import noise_generator, sampling_generator
from veil.runtime.dpsgd_local import client_dpsgd_events, client_sample_rates

DEFAULT_NUM_RUNS = 200_000
"""Runs of a white-box audit (half with the canary): a release is a few floats, so many are
cheap, and the bound on a large ε needs them (see docs/privacy-audit.md)."""
CANARY_NORM = 2.0
"""The canary's gradient or update norm, in units of the clip norm C: above C, so clipping acts."""
FEDAVG_RUNS_PER_CALL = 256
"""DP-FedAvg runs per call of the aggregator: the canary clients' updates form a dense
``[clients, runs]`` block, so memory grows with its square."""
STATISTICS = ("likelihood_ratio", "sum")
WHITE_BOX = "white-box gradient canary"


def canary_log_likelihood_ratio(observed: Tensor, noise_multiplier: float, sample_rate: float):
    """log p_in(y) / p_out(y) per entry, for p_in = (1 − q)·N(0, σ²) + q·N(1, σ²) and
    p_out = N(0, σ²): the optimal per-step score of a canary shifting y by 1 when sampled."""
    shifted = (2 * observed.double() - 1) / (2 * noise_multiplier**2)
    if sample_rate == 1:
        return shifted
    return torch.logaddexp(
        torch.tensor(math.log1p(-sample_rate), dtype=torch.float64),
        math.log(sample_rate) + shifted,
    )


def audit_dpsgd(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    num_runs: int = DEFAULT_NUM_RUNS,
    clip_norm: float = 1.0,
    accountant: str = "pld",
    confidence: float = 0.95,
    statistic: str = "likelihood_ratio",
    noise_seed_for_testing: int | None = None,
    split_seed: int = 0,
) -> AuditResult:
    """White-box audit of ``steps`` DP-SGD steps (σ, Poisson rate q, clip norm C) with a Dirac
    gradient canary, over ``num_runs`` runs (half with the canary).

    Each step samples the canary's run-batches with `poisson_sample`, clips its gradient with
    `clip_factors` and releases `noisy_average` of the clipped sum (the other examples'
    gradients are zero). Claimed ε: the ledger's for ``dpsgd_event(σ, q, steps)``.
    """
    _check_audit(num_runs, statistic)
    event = dpsgd_event(noise_multiplier, sample_rate, steps)
    claimed = ledger_epsilon([event], delta, accountant)
    generator = noise_generator(noise_seed_for_testing)
    canary = _canary_mask(num_runs)
    gradient_norm = torch.tensor(CANARY_NORM * clip_norm)
    clipped = float(clip_factors(gradient_norm, clip_norm) * gradient_norm)
    scores = torch.zeros(num_runs, dtype=torch.float64)
    for _ in range(steps):
        sampled = torch.zeros(num_runs)
        sampled[poisson_sample(num_runs, sample_rate, generator)] = 1.0
        summed = {"canary": canary * sampled * clipped}
        released = noisy_average(summed, noise_multiplier, clip_norm, 1.0, generator)["canary"]
        scores += _score(released / clip_norm, noise_multiplier, sample_rate, statistic)
    settings = {
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "clip_norm": clip_norm,
        "accountant": accountant,
    }
    return _white_box_result(
        "DP-SGD", statistic, claimed, scores, canary, settings, delta, confidence, split_seed
    )


def audit_dp_fedavg(
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    *,
    num_runs: int = DEFAULT_NUM_RUNS,
    clip_norm: float = 1.0,
    noise_decay: float = 1.0,
    accountant: str = "pld",
    confidence: float = 0.95,
    statistic: str = "likelihood_ratio",
    noise_seed_for_testing: int | None = None,
    split_seed: int = 0,
) -> AuditResult:
    """White-box audit of ``rounds`` DP-FedAvg rounds (σ, client sampling rate q, clip norm C,
    σ_t = σ·decay^(t−1)) with a canary client whose update is a Dirac vector.

    Each round draws the canary client's participation with `PoissonSampler` (rate 1: always)
    and runs veil's encoder `clip_l2` and aggregator `gaussian_sum` on the canary clients'
    updates (the other clients' updates are zero); the aggregator's DP events go to an
    in-memory ledger, whose ε is the claim.
    """
    _check_audit(num_runs, statistic)
    check(
        isinstance(rounds, int) and rounds >= 1, f"rounds must be an integer >= 1 (got {rounds!r})"
    )
    encoder = clip_l2(clip_norm)
    aggregator = gaussian_sum(
        noise_multiplier, clip_norm, 1.0, poisson_sampling(sampling_rate), noise_decay
    )
    state = aggregator.init({})
    canary = _canary_mask(num_runs)
    scores = torch.zeros(num_runs, dtype=torch.float64)
    released_events = []
    for round_index in range(1, rounds + 1):
        key = noise_generator(noise_seed_for_testing, round_index)
        rng = sampling_generator(noise_seed_for_testing, round_index)
        taking_part = torch.zeros(num_runs)
        taking_part[PoissonSampler(sampling_rate).sample(num_runs, rng)] = 1.0
        released = torch.empty(num_runs)
        for start in range(0, num_runs, FEDAVG_RUNS_PER_CALL):
            block = slice(start, min(start + FEDAVG_RUNS_PER_CALL, num_runs))
            updates = _canary_clients(canary[block] * taking_part[block], clip_norm)
            updates, _, _ = encoder.apply(updates, None, key)
            aggregate, new_state, events = aggregator.apply(updates, state, key)
            released[block] = aggregate["canary"] / clip_norm
        state = new_state
        released_events.extend(events)
        sigma = noise_multiplier * noise_decay ** (round_index - 1)
        scores += _score(released, sigma, sampling_rate, statistic)
    claimed = ledger_epsilon(released_events, delta, accountant)
    settings = {
        "noise_multiplier": noise_multiplier,
        "sample_rate": sampling_rate,
        "steps": rounds,
        "clip_norm": clip_norm,
        "noise_decay": noise_decay,
        "accountant": accountant,
    }
    return _white_box_result(
        "DP-FedAvg", statistic, claimed, scores, canary, settings, delta, confidence, split_seed
    )


def run_audit(
    config: RunConfig,
    *,
    num_runs: int | None = None,
    confidence: float = 0.95,
    white_box: bool = True,
    seed: int = 0,
) -> AuditResult:
    """Audit the DP mechanism of a federated run config: DP-FedAvg (``privacy.level: client``)
    or the DP-SGD of its most exposed client (``level: sample``; the client whose ledger ε is
    the run's), with the σ, sampling, steps, δ and accountant that ``veil run`` would use.

    ``white_box``: gradient canary, every release seen (`audit_dpsgd`, `audit_dp_fedavg`);
    otherwise the input-space canary seen through the final model only
    (`veil.audit.black_box`, sample level). ``num_runs`` defaults to the chosen audit's;
    ``seed`` drives the threshold-selection split only. Noise is OS-seeded unless the config
    sets ``privacy.noise_seed_for_testing``.
    """
    _check_auditable(config, white_box)
    experiment = build_experiment(config)
    privacy, plan = config.privacy, experiment.privacy
    rounds = config.federation.rounds
    common = {"confidence": confidence}
    if privacy.level == "client":
        return audit_dp_fedavg(
            plan.noise_multiplier,
            plan.sampling_rate,
            rounds,
            privacy.delta,
            num_runs=num_runs or DEFAULT_NUM_RUNS,
            clip_norm=privacy.clip_norm,
            noise_decay=privacy.noise_decay,
            accountant=privacy.accountant,
            noise_seed_for_testing=privacy.noise_seed_for_testing,
            split_seed=seed,
            **common,
        )
    client = most_exposed_client(experiment)
    if not white_box:
        runs = num_runs or BLACK_BOX_RUNS
        return audit_dpsgd_black_box(experiment, client, num_runs=runs, split_seed=seed, **common)
    size = int(experiment.data.train_sizes[client])
    local = experiment.plan.local
    return audit_dpsgd(
        plan.noise_multiplier,
        float(client_sample_rates(np.array([size]), local.batch_size)[0]),
        rounds * int(local.num_steps(size)),
        privacy.delta,
        num_runs=num_runs or DEFAULT_NUM_RUNS,
        clip_norm=privacy.clip_norm,
        accountant=privacy.accountant,
        noise_seed_for_testing=privacy.noise_seed_for_testing,
        split_seed=seed,
        **common,
    )


def most_exposed_client(experiment: Experiment) -> int:
    """The client whose records spend the most ε over the run under sample-level DP (its
    sampling rate and step count give the run's claimed ε)."""
    data, local = experiment.data, experiment.plan.local
    names = [c.name for c in data.clients]
    events = client_dpsgd_events(np.arange(data.num_clients), data.train_sizes, local, names)
    settings = experiment.privacy.ledger
    ledger = PrivacyLedger.in_memory(LedgerSettings(settings.delta, None, settings.accountant))
    ledger.record(1, events * experiment.config.federation.rounds)  # one ε per distinct history
    return int(np.argmax([ledger.epsilon(name) for name in names]))


def _check_auditable(config: RunConfig, white_box: bool) -> None:
    privacy = config.privacy
    check(
        config.task == "federated_training",
        f"veil audit audits task federated_training (got {config.task})",
    )
    check(
        privacy is not None,
        "the config has no privacy section, so there is no ε to audit: add privacy "
        "(level client or sample) with target_epsilon or noise_multiplier",
    )
    check(
        not privacy.adaptive_clipping,
        "the audit does not cover adaptive clipping (its clip norm is shared by all runs); "
        "set privacy.adaptive_clipping: false to audit the fixed-clip mechanism",
    )
    if privacy.level == "client":
        check(
            config.secure_aggregation is None and config.encryption is None,
            "the client-level audit measures central DP-FedAvg; with secure_aggregation or "
            "encryption the noise is added differently: remove that section to audit DP-FedAvg",
        )
        check(
            white_box,
            "the black-box audit uses an input-space canary record, so it needs privacy.level: "
            "sample; audit client-level DP with white_box=True",
        )


def _canary_clients(present: Tensor, clip_norm: float) -> ClientUpdates:
    """One client per run with the canary in this block: update CANARY_NORM·C on its run's
    coordinate, zero elsewhere (``[clients, runs]``)."""
    runs = torch.nonzero(present).flatten()
    deltas = torch.zeros(len(runs), len(present))
    deltas[torch.arange(len(runs)), runs] = CANARY_NORM * clip_norm
    return ClientUpdates({"canary": deltas}, torch.ones(len(runs)), runs)


def _score(observed: Tensor, noise_multiplier: float, sample_rate: float, statistic: str):
    if statistic == "sum":
        return observed.double() / noise_multiplier**2
    return canary_log_likelihood_ratio(observed, noise_multiplier, sample_rate)


def _canary_mask(num_runs: int) -> Tensor:
    """1 for the first half of the runs (canary in), 0 for the rest."""
    return (torch.arange(num_runs) < num_runs // 2).to(torch.float32)


def _white_box_result(
    mechanism: str,
    statistic: str,
    claimed: float,
    scores: Tensor,
    canary: Tensor,
    settings: dict,
    delta: float,
    confidence: float,
    split_seed: int,
) -> AuditResult:
    inside = canary.numpy() > 0
    scores = scores.numpy()
    return AuditResult.from_scores(
        mechanism,
        WHITE_BOX,
        statistic,
        claimed,
        scores[inside],
        scores[~inside],
        settings,
        delta=delta,
        confidence=confidence,
        split_seed=split_seed,
    )


def _check_audit(num_runs: int, statistic: str) -> None:
    check_num_runs(num_runs)
    check(
        statistic in STATISTICS, f"statistic must be one of {list(STATISTICS)} (got {statistic!r})"
    )
