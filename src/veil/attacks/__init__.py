"""Attacks that show what veil protects against: gradient inversion, membership inference, model
inversion and poisoning. Each module implements its paper and reports measured figures."""
