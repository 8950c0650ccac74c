"""``veil server``, ``veil client`` and ``veil certs``: a federated run as separate processes.

    veil certs init CERTS [--site NAME]...                   CA, server certificate (and sites)
    veil certs issue CERTS NAME...                           one certificate per site
    veil server CONFIG --certs CERTS [--out DIR]             the coordinator (mTLS)
    veil client --server HOST:PORT --site NAME --certs CERTS one site

mTLS is the default; ``--insecure`` (plaintext, no authentication) prints a warning and is for
a trusted loopback only. Progress goes to stderr as log lines; keys and tokens never do.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from veil.cli import app, exit_on_bad_input, stderr
from veil.errors import ConfigError

certs_app = typer.Typer(help="Create mTLS certificates for a deployment.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")

CertsOption = Annotated[
    Path | None, typer.Option("--certs", help="Certificates folder (veil certs init).")
]
InsecureOption = Annotated[
    bool,
    typer.Option("--insecure", help="Plaintext without authentication (trusted loopback only)."),
]
DaysOption = Annotated[int, typer.Option("--days", help="Validity of the certificates.")]


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is at the time (the terminal, or a test runner's)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_to_stderr() -> None:
    """Progress of the veil loggers as time-stamped lines on stderr (installed once)."""
    logger = logging.getLogger("veil")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


def _security(certs: Path | None, insecure: bool, who: str):
    """Credentials loader for ``who`` (server or a site), or None after warning (--insecure)."""
    if (certs is None) == (not insecure):
        raise ConfigError(
            "give --certs DIR (mutual TLS, from `veil certs init`) or --insecure (plaintext, "
            "for a trusted loopback only), not both or neither"
        )
    if insecure:
        stderr.print(
            Text(
                f"warning: --insecure: the {who} talks plaintext gRPC without authentication; "
                "anyone who can reach the port can read the model and pose as any site. "
                "Use it only on a trusted loopback for testing."
            ),
            soft_wrap=True,
        )
    return certs


@certs_app.command("init")
def certs_init(
    folder: Annotated[Path, typer.Argument(help="New folder for the CA and certificates.")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Host name or IP of the server (repeat; default localhost)."),
    ] = None,
    site: Annotated[
        list[str] | None, typer.Option("--site", help="Also issue this site (repeat).")
    ] = None,
    days: DaysOption = 365,
) -> None:
    """Create a CA and the server's certificate (and, with --site, site certificates)."""
    from veil.runtime.certs import DEFAULT_HOSTS, init_authority, issue_site

    with exit_on_bad_input():
        written = init_authority(folder, tuple(host or DEFAULT_HOSTS), days)
        for name in site or []:
            written += issue_site(folder, name, days)
    for path in written:
        typer.echo(str(path))
    stderr.print(Text(f"keep {folder / 'ca.key'} offline once the sites have their certificates"))


@certs_app.command("issue")
def certs_issue(
    folder: Annotated[Path, typer.Argument(help="Folder made by `veil certs init`.")],
    sites: Annotated[list[str], typer.Argument(help="Site names (each certificate's CN).")],
    days: DaysOption = 365,
) -> None:
    """Issue one certificate (and private key, mode 0600) per site from the folder's CA."""
    from veil.runtime.certs import issue_site

    with exit_on_bad_input():
        written = [path for name in sites for path in issue_site(folder, name, days)]
    for path in written:
        typer.echo(str(path))


@app.command()
def server(
    config: Annotated[Path, typer.Argument(help="YAML run config (with a deployment section).")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: metrics, report, ledger, checkpoints.")
    ] = Path("runs/deploy"),
    certs: CertsOption = None,
    insecure: InsecureOption = False,
    address: Annotated[
        str | None, typer.Option("--address", help="host:port (default: deployment.address).")
    ] = None,
    min_clients: Annotated[
        int | None, typer.Option("--min-clients", help="Sites to wait for before each round.")
    ] = None,
    site: Annotated[
        list[str] | None, typer.Option("--site", help="Allowlist (repeat; default: all).")
    ] = None,
) -> None:
    """Coordinate CONFIG's rounds over gRPC; resume from OUT's checkpoints if there are any."""
    from veil.config import load_config
    from veil.runtime.certs import server_credentials
    from veil.runtime.grpc.coordinator import ServerOptions, serve

    with exit_on_bad_input():
        run_config = load_config(config)
        folder = _security(certs, insecure, "server")
        credentials = server_credentials(folder) if folder else None
        _log_to_stderr()
        options = ServerOptions(out, credentials, address, min_clients, tuple(site or ()) or None)
        stop = threading.Event()  # SIGTERM: finish the round in progress, then write the report
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        try:
            metrics = serve(run_config, options, stop=stop)
        finally:
            signal.signal(signal.SIGTERM, previous)
    final = metrics["final"]
    stderr.print(f"accuracy {final['accuracy']:.4f}  loss {final['loss']:.4f}")
    if final.get("stopped"):
        stderr.print(Text(f"stopped after round {final['rounds']}: {final['stopped']}"))
    stderr.print(Text(f"claim: {final['claim']}"))
    typer.echo(str(out / "report.html"))


@app.command()
def client(
    server_address: Annotated[str, typer.Option("--server", help="Coordinator's host:port.")],
    site: Annotated[str, typer.Option("--site", help="This site's name (its certificate CN).")],
    certs: CertsOption = None,
    insecure: InsecureOption = False,
    give_up_after: Annotated[
        float, typer.Option("--give-up-after", help="Seconds without the coordinator, then exit.")
    ] = 300.0,
    attest: Annotated[
        Path | None,
        typer.Option(
            "--attest",
            help="This site's own run config: its aggregation.tee section is the attestation "
            "policy the aggregator must meet (default: the coordinator's, with a warning).",
        ),
    ] = None,
    round_counter: Annotated[
        Path | None,
        typer.Option("--round-counter", help="File keeping the highest attested round."),
    ] = None,
) -> None:
    """Take part in a deployment as SITE until the coordinator finishes the run."""
    from veil.config import load_config
    from veil.runtime.certs import check_site_name, site_credentials
    from veil.runtime.grpc.client import SiteOptions, run_site

    with exit_on_bad_input():
        check_site_name(site)
        tee = None
        if attest is not None:
            tee = load_config(attest).aggregation.tee
            if tee is None:
                raise ConfigError(f"{attest}: --attest needs a config with aggregation.tee")
        folder = _security(certs, insecure, "site")
        credentials = site_credentials(folder, site) if folder else None
        _log_to_stderr()
        reason = run_site(
            SiteOptions(
                server_address,
                site,
                credentials,
                give_up_after=give_up_after,
                tee=tee,
                round_counter_file=round_counter,
            )
        )
    stderr.print(Text(f"site {site}: done ({reason})"))
