"""Differential privacy: mechanisms, accounting, DP-SGD, client-level DP, the ledger, local DP."""

from veil.privacy.accounting import calibrate_noise_multiplier, compose, dpsgd_epsilon, epsilon
from veil.privacy.dpsgd_api import DPOptimizer, make_private
from veil.privacy.ledger import LedgerSettings, PrivacyLedger, SubjectEvent
from veil.privacy.mechanisms import (
    discrete_gaussian_mechanism,
    gaussian_mechanism,
    laplace_mechanism,
    randomized_response,
)
from veil.privacy.model_check import check_model, fix_model

__all__ = [
    "DPOptimizer",
    "LedgerSettings",
    "PrivacyLedger",
    "SubjectEvent",
    "calibrate_noise_multiplier",
    "check_model",
    "compose",
    "discrete_gaussian_mechanism",
    "dpsgd_epsilon",
    "epsilon",
    "fix_model",
    "gaussian_mechanism",
    "laplace_mechanism",
    "make_private",
    "randomized_response",
]
