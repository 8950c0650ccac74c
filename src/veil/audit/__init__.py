"""Empirical audits of a run's privacy claim: canary-based ε lower bounds, fairness metrics and
the privacy–utility–cost trade-off table."""
