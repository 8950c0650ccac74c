"""Differential privacy: mechanisms, accounting, DP-SGD, client-level DP, the ledger, local DP."""
