"""Homomorphic encryption: packed encrypted aggregation, encrypted inference, vertical FL."""
