"""A whole deployment in one process on 127.0.0.1: the coordinator and each site in a thread.

It runs a config through the real network stack (gRPC, mTLS, chunked messages, deadlines,
retries) without starting processes — to try a deployment config, and for tests.
``make deploy-demo`` does the same with one process per party.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from veil.config import DeploymentConfig, RunConfig
from veil.runtime.certs import server_credentials, site_credentials
from veil.runtime.grpc.client import SiteOptions, run_site
from veil.runtime.grpc.coordinator import ServerOptions, serve
from veil.runtime.grpc.wire import Backoff


@dataclass
class Loopback:
    """A running coordinator on ``127.0.0.1:port``; `start_site` adds sites to it."""

    port: int
    allowed: list[str]  # the sites the coordinator admits
    certs: Path | None
    sites: dict[str, threading.Thread] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)  # site → closing reason or error

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def site_options(self, site: str, **changes: Any) -> SiteOptions:
        """How ``site`` reaches this coordinator (mTLS with its certificate from ``certs``)."""
        credentials = site_credentials(self.certs, site) if self.certs else None
        fast = SiteOptions(self.address, site, credentials, backoff=Backoff(0.05, 2, 0.5))
        return replace(fast, give_up_after=30.0, **changes)

    def start_site(self, site: str, **changes: Any) -> None:
        """Run ``site`` (`run_site`) in a thread; its outcome lands in ``outcomes[site]``."""
        options = self.site_options(site, **changes)

        def work() -> None:
            try:
                self.outcomes[site] = run_site(options)
            except Exception as error:  # kept for the caller to inspect
                self.outcomes[site] = error

        self.sites[site] = threading.Thread(target=work, name=f"site {site}", daemon=True)
        self.sites[site].start()


@contextmanager
def loopback(
    config: RunConfig,
    out: str | Path,
    certs: str | Path | None = None,
    stop: threading.Event | None = None,
    result: dict[str, Any] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Loopback]:
    """Serve ``config`` on a free port of 127.0.0.1 (mTLS with the ``certs`` folder of `veil
    certs init`, plaintext when None) while the block runs; on leaving, wait for the run to end
    and put its metrics (or the error it raised) in ``result["metrics"]``. If the block raises,
    the run is stopped. ``on_round`` gets each finished round's metrics record."""
    deployment = replace_address(config)
    credentials = server_credentials(certs) if certs else None
    result = {} if result is None else result
    stop = stop or threading.Event()
    bound: list[tuple[int, list[str]]] = []
    listening = threading.Event()

    def on_listening(port: int, allowed: list[str]) -> None:
        bound.append((port, allowed))
        listening.set()

    def coordinate() -> None:
        try:
            options = ServerOptions(Path(out), credentials)
            result["metrics"] = serve(deployment, options, on_listening, on_round, stop)
        except Exception as error:
            result["metrics"] = error
        finally:
            listening.set()

    server = threading.Thread(target=coordinate, name="coordinator", daemon=True)
    server.start()
    listening.wait()
    if not bound:
        raise result["metrics"]
    handle = Loopback(*bound[0], Path(certs) if certs else None)
    try:
        yield handle
    except BaseException:
        stop.set()
        raise
    finally:
        server.join()
        for thread in handle.sites.values():
            thread.join()


def replace_address(config: RunConfig) -> RunConfig:
    """``config`` listening on a free port of 127.0.0.1."""
    deployment = (config.deployment or DeploymentConfig()).model_copy(
        update={"address": "127.0.0.1:0"}
    )
    return config.model_copy(update={"deployment": deployment})


def run_on_loopback(
    config: RunConfig, out: str | Path, certs: str | Path | None = None
) -> dict[str, Any]:
    """Run ``config`` with every allowed site taking part; return the metrics."""
    result: dict[str, Any] = {}
    with loopback(config, out, certs, result=result) as running:
        for name in running.allowed:
            running.start_site(name)
    if isinstance(result["metrics"], Exception):
        raise result["metrics"]
    return result["metrics"]
