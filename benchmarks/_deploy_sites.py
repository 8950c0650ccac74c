"""Site processes of ``veil bench deploy``: many sites of one deployment in one process.

Each site is a thread running veil's own site loop (`veil.runtime.grpc.run_site`, default
retries and deadlines) with its own mTLS certificate and its own gRPC channel to the
coordinator, so the coordinator sees as many TLS 1.3 connections as there are sites.

    python benchmarks/_deploy_sites.py ADDRESS CERTS SITE [SITE ...]

Prints one JSON object on stdout, site → how it ended ("error: ..." if it raised), and exits 1
if any site failed.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path


def run_sites(address: str, certs: Path, sites: list[str]) -> dict[str, str]:
    """Run every site of ``sites`` against ``address`` until the coordinator finishes; return
    each site's closing reason, or its error."""
    from veil.runtime.certs import site_credentials
    from veil.runtime.grpc import SiteOptions, run_site

    outcomes: dict[str, str] = {}

    def take_part(site: str) -> None:
        try:
            options = SiteOptions(address, site, site_credentials(certs, site))
            outcomes[site] = run_site(options)
        except Exception as error:  # reported to the parent, which fails the benchmark
            outcomes[site] = f"error: {type(error).__name__}: {error}"

    threads = [threading.Thread(target=take_part, args=(s,), name=s) for s in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def main(argv: list[str]) -> int:
    address, certs, *sites = argv
    import torch

    torch.set_num_threads(1)  # many sites share few cores: no intra-op pools
    outcomes = run_sites(address, Path(certs), sites)
    print(json.dumps(outcomes))
    return int(any(reason.startswith("error:") for reason in outcomes.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
