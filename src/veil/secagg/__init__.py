"""Secure aggregation: SecAgg+ (Bell et al. 2020) with dropouts, distributed DP, PQ hybrid keys."""
