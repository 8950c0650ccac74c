"""Runtimes that carry a round: the vectorized in-process simulator (later: Ray, gRPC)."""

from veil.runtime.pool import ClientPool
from veil.runtime.sim import ENGINES, SimulatedTransport, resolve_device, resolve_engine

__all__ = ["ENGINES", "ClientPool", "SimulatedTransport", "resolve_device", "resolve_engine"]
