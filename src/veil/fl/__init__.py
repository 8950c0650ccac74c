"""Federated learning core: links, sampling, local training plans, server optimizers, run_round."""

from veil.fl.aggregators import weighted_mean
from veil.fl.links import ClientUpdates, Link, chain, identity
from veil.fl.local import LocalTraining, batch_schedule
from veil.fl.round import RoundMetrics, RoundPlan, ServerState, init_server_state, run_round
from veil.fl.sampling import FixedCountSampler, FractionSampler, PoissonSampler
from veil.fl.server_optimizers import (
    SERVER_OPTIMIZERS,
    ServerOptimizer,
    build_server_optimizer,
    fedadam,
    fedavg,
    fedavgm,
    fedyogi,
)

__all__ = [
    "SERVER_OPTIMIZERS",
    "ClientUpdates",
    "FixedCountSampler",
    "FractionSampler",
    "Link",
    "LocalTraining",
    "PoissonSampler",
    "RoundMetrics",
    "RoundPlan",
    "ServerOptimizer",
    "ServerState",
    "batch_schedule",
    "build_server_optimizer",
    "chain",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedyogi",
    "identity",
    "init_server_state",
    "run_round",
    "weighted_mean",
]
