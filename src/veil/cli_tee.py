"""``veil tee build | measure | verify``: the attested aggregator's enclave and its evidence.

``build`` makes the Gramine-SGX enclave of ``veil server`` and prints its MRENCLAVE;
``measure`` prints veil's own measurement of this installation running a config (what the
simulated backend attests); ``verify`` checks an aggregator's evidence by hand, as a client
would, and prints what was attested or the reason for refusing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from veil.cli import DEFAULT_CONFIG, app, exit_on_bad_input
from veil.errors import ConfigError

tee_app = typer.Typer(
    help="Trusted execution: build, measure and verify the attested aggregator.",
    no_args_is_help=True,
)
app.add_typer(tee_app, name="tee")
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@tee_app.command()
def build(
    config: Annotated[Path, typer.Argument(help="YAML run config the aggregator will run.")],
    out: Annotated[Path, typer.Option(help="Folder for the manifest, SIGSTRUCT, outputs.")] = Path(
        "enclave"
    ),
    certs: Annotated[Path, typer.Option(help="Certificates folder (veil certs init).")] = Path(
        "certs"
    ),
    debug: Annotated[bool, typer.Option(help="Debug enclave: clients refuse it.")] = False,
    signing_key: Annotated[
        Path | None, typer.Option(help="Enclave signing key (default: Gramine's).")
    ] = None,
) -> None:
    """Build the Gramine-SGX enclave of `veil server CONFIG`; print its MRENCLAVE."""
    from veil.tee.build import build_enclave

    with exit_on_bad_input():
        result = build_enclave(config, out, certs, debug=debug, signing_key=signing_key)
    typer.echo(result.mrenclave.hex())


@tee_app.command()
def measure(
    config: Annotated[
        Path | None, typer.Argument(help="YAML run config (default: hospitals).")
    ] = None,
    manifest: Annotated[bool, typer.Option(help="Also print every line that was hashed.")] = False,
) -> None:
    """veil's measurement of this installation running CONFIG (what `simulated` attests)."""
    from veil.config import load_config
    from veil.tee.measurement import measure_aggregator

    with exit_on_bad_input():
        run_config = load_config(config or DEFAULT_CONFIG)
    measured = measure_aggregator(run_config.model_dump(mode="json"))
    if manifest:
        typer.echo("\n".join(measured.manifest))
    typer.echo(measured.hex)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{what} {path}: {error.strerror or error}") from None


@tee_app.command()
def verify(
    evidence: Annotated[Path, typer.Argument(help="Evidence file the aggregator sent.")],
    nonce: Annotated[str, typer.Option(help="The 32-byte nonce asked for, in hex.")],
    tls_key: Annotated[Path, typer.Option(help="PEM public key or certificate it binds.")],
    root: Annotated[Path, typer.Option(help="PEM root certificate (Intel SGX Root CA).")],
    measurement: Annotated[list[str], typer.Option(help="Accepted measurement (repeatable).")],
    accept_tcb: Annotated[
        list[str] | None, typer.Option(help="Accepted TCB status (repeatable).")
    ] = None,
    allow_debug: Annotated[bool, typer.Option(help="Accept debug enclaves.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check an aggregator's evidence as a client would; exit 2 with the reason if refused."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from veil.tee.certificates import load_root
    from veil.tee.evidence import verify_aggregator
    from veil.tee.measurement import parse_measurement
    from veil.tee.verifier import AttestationPolicy

    with exit_on_bad_input():
        try:
            nonce_bytes = bytes.fromhex(nonce)
        except ValueError:
            raise ConfigError(f"--nonce must be hex (got {nonce!r})") from None
        pem = _read(tls_key, "TLS key")
        try:
            key = (
                x509.load_pem_x509_certificate(pem).public_key()
                if b"CERTIFICATE" in pem
                else load_pem_public_key(pem)
            )
        except ValueError:
            raise ConfigError(f"--tls-key {tls_key} is not a PEM key or certificate") from None
        policy = AttestationPolicy(
            load_root(root),
            frozenset(parse_measurement(m, "--measurement") for m in measurement),
            frozenset(accept_tcb or ["UpToDate"]),
            allow_debug,
        )
        verified = verify_aggregator(_read(evidence, "evidence"), nonce_bytes, key, policy)
    document = {
        "measurement": verified.measurement.hex(),
        "tee": verified.tee,
        "tcb_status": verified.tcb_status,
        "debug": verified.debug,
        "round": verified.round_counter,
    }
    typer.echo(json.dumps(document, indent=2) if as_json else verified.describe())
