"""Deployment over gRPC: the same `run_round` with sites in other processes on other hosts.

``veil.proto`` defines the messages (generated into ``veil_pb2``/``veil_pb2_grpc``, committed);
`codec` maps them to veil objects, `wire` chunks and retries them, `board` hands tasks to sites
with deadlines, `transport` is `run_round`'s transport, `server` admits sites (mTLS),
`coordinator` runs crash-safe rounds, `client` is a site, `attestation` lets sites attest an
enclave the coordinator hosts (``aggregation.tee``), `loopback` runs them all in one process on
127.0.0.1.
"""

from veil.runtime.grpc.client import SiteOptions, run_site
from veil.runtime.grpc.coordinator import ServerOptions, StopRun, run_rounds, serve

__all__ = ["ServerOptions", "SiteOptions", "StopRun", "run_rounds", "run_site", "serve"]
