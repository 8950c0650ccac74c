"""The ``veil`` command line (typer + rich).

Contract (tests and benchmarks rely on it): exit code 0 on success, 2 on bad input with one clear
line on stderr and no traceback. See DESIGN.md for each command's output.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from veil import __version__
from veil.errors import VeilError

app = typer.Typer(
    name="veil",
    help="Privacy-preserving ML: federated learning, DP, secure aggregation, HE, MPC, TEE.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
REPO_ROOT = Path(__file__).resolve().parents[2]  # benchmarks/ live in the source checkout
DEFAULT_CONFIG = Path(__file__).resolve().parent / "examples" / "hospitals.yaml"  # in the wheel


@contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """Turn a `VeilError` into one line on stderr and exit status 2."""
    try:
        yield
    except VeilError as error:
        stderr.print(Text.assemble(("error:", "bold red"), " ", str(error)), soft_wrap=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"veil {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """veil: train on data you may not pool, and say honestly what it protects."""


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="YAML run config (default: the hospitals example).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for metrics.json and report.html.")
    ] = Path("runs/latest"),
) -> None:
    """Run a federated experiment; write OUT/metrics.json and OUT/report.html."""
    from veil.config import load_config
    from veil.experiment import build_experiment, run_experiment

    with exit_on_bad_input():
        run_config = load_config(config or DEFAULT_CONFIG)
        if run_config.task == "federated_training":
            metrics = run_with_progress(build_experiment(run_config), out)
        else:  # frequency estimation, vertical training
            metrics = run_experiment(run_config, out)
    final = metrics["final"]
    if metrics.get("frequency_estimation"):
        result = metrics["frequency_estimation"]
        stderr.print(
            f"L∞ error {result['linf_error']:.4f}  top-10 recall {result['top10_recall']:.2f}"
            f"  ({final['seconds']:.1f} s)"
        )
    else:
        loss = "—" if final.get("loss") is None else f"{final['loss']:.4f}"
        summary = f"accuracy {final['accuracy']:.4f}  loss {loss}"
        stderr.print(f"{summary}  ({final['seconds']:.1f} s)")
    if final.get("stopped"):
        stderr.print(Text(f"stopped after round {final['rounds']}: {final['stopped']}"))
    stderr.print(Text(f"claim: {final['claim']}"))
    typer.echo(str(out / "report.html"))


def run_with_progress(experiment, out: Path) -> dict:
    """Execute a built experiment with a progress bar of rounds on stderr."""
    from veil.experiment import execute, prepare_output_directory

    prepare_output_directory(out)  # a bad --out fails before the progress bar starts
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    config = experiment.config
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(
            escape(f"{config.name} rounds"), total=config.federation.rounds, status=""
        )

        def on_round(record: dict) -> None:
            status = f"acc {record['accuracy']:.3f}  loss {record['loss']:.3f}"
            if record["epsilon"] is not None:
                status += f"  ε {record['epsilon']:.3f}"
            progress.update(task, advance=1, status=status)

        return execute(experiment, out, on_round=on_round)


def print_json_or_table(result: dict, as_json: bool, title: str) -> None:
    """``--json``: the dict on stdout; otherwise a two-column table."""
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command()
def epsilon(
    noise_multiplier: Annotated[float, typer.Option(help="σ: noise std / clip norm.")],
    sample_rate: Annotated[float, typer.Option(help="q: Poisson sampling probability.")],
    steps: Annotated[int, typer.Option(help="T: number of noisy steps.")],
    delta: Annotated[float, typer.Option(help="δ.")],
    accountant: Annotated[str, typer.Option(help="pld or rdp.")] = "pld",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """ε of T Poisson-subsampled Gaussian steps (add/remove adjacency), e.g. DP-SGD."""
    from veil.privacy.accounting import dpsgd_epsilon

    with exit_on_bad_input():
        value = dpsgd_epsilon(noise_multiplier, sample_rate, steps, delta, accountant)
    result = {
        "epsilon": value,
        "accountant": accountant,
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "delta": delta,
    }
    print_json_or_table(result, as_json, "privacy spent")


@app.command()
def calibrate(
    target_epsilon: Annotated[float, typer.Option(help="ε to spend over all steps.")],
    sample_rate: Annotated[float, typer.Option(help="q: Poisson sampling probability.")],
    steps: Annotated[int, typer.Option(help="T: number of noisy steps.")],
    delta: Annotated[float, typer.Option(help="δ.")],
    accountant: Annotated[str, typer.Option(help="pld or rdp.")] = "pld",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The smallest noise multiplier σ whose ε after T steps is at most the target."""
    from veil.privacy.accounting import calibrate_noise_multiplier, dpsgd_epsilon

    with exit_on_bad_input():
        sigma = calibrate_noise_multiplier(target_epsilon, sample_rate, steps, delta, accountant)
        spent = dpsgd_epsilon(sigma, sample_rate, steps, delta, accountant)
    result = {
        "noise_multiplier": sigma,
        "epsilon": spent,
        "target_epsilon": target_epsilon,
        "accountant": accountant,
        "sample_rate": sample_rate,
        "steps": steps,
        "delta": delta,
    }
    print_json_or_table(result, as_json, "calibrated noise")


ledger_app = typer.Typer(help="Inspect privacy ledgers.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("show")
def ledger_show(
    path: Annotated[Path, typer.Argument(help="A privacy_ledger.jsonl file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Spent and remaining ε per subject, recomputed from the ledger's events."""
    from veil.privacy.ledger import PrivacyLedger

    with exit_on_bad_input():
        summary = PrivacyLedger.load(path).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"privacy ledger {path}")
    for column in ("subject", "releases", "ε spent", "ε budget", "ε remaining", "δ"):
        table.add_column(column)
    for row in summary["subjects"]:
        budget, remaining = row["budget_epsilon"], row["remaining_epsilon"]
        table.add_row(
            row["subject"],
            str(row["releases"]),
            f"{row['epsilon']:.4g}",
            "none" if budget is None else f"{budget:g}",
            "unlimited" if remaining is None else f"{remaining:.4g}",
            f"{summary['delta']:g}",
        )
    Console().print(table)
    typer.echo(f"accountant: {summary['accountant']}, neighbouring: {summary['neighboring']}")


def main() -> None:
    """The ``veil`` entry point: click's own usage errors become one line and exit 2 as well."""
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's RDP convergence chatter
    try:
        code = app(standalone_mode=False)
    except click.UsageError as error:
        stderr.print(
            Text.assemble(("error:", "bold red"), " ", error.format_message()), soft_wrap=True
        )
        sys.exit(2)
    except click.Abort:
        stderr.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def find_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (dashes become underscores) from the repository.

    The folder goes on ``sys.path`` and the file is imported by its bare name, so that worker
    processes of a peer (Ray actors inherit ``sys.path``) can import it too.
    """
    folder = REPO_ROOT / "benchmarks"
    available = sorted(p.stem.replace("_", "-") for p in folder.glob("*.py") if _is_benchmark(p))
    if name not in available:
        raise VeilError(f"unknown benchmark {name!r}; available: {', '.join(available) or 'none'}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name.replace("-", "_"))


def _is_benchmark(path: Path) -> bool:
    return not path.stem.startswith("_") and "def run_benchmark(" in path.read_text()


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Workload, e.g. fl-sim.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller, faster version of the workload.")
    ] = False,
) -> None:
    """Time veil against its peer on a named workload, in one process."""
    with exit_on_bad_input():
        result = find_benchmark(name).run_benchmark(
            quick=quick, log=lambda line: stderr.print(Text(line))
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        stderr.print_json(data=result)


@app.command("he-infer")
def he_infer(
    model: Annotated[str, typer.Option(help="logistic or mlp.")] = "logistic",
    samples: Annotated[int, typer.Option(help="Test rows to score encrypted.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the data split and the training.")] = 0,
    packing: Annotated[
        str, typer.Option(help="sample (one ciphertext per sample) or batch (one query).")
    ] = "sample",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Encrypted inference on breast cancer: CKKS scores vs plaintext, latency, sizes."""
    from veil.he.inference import measure_encrypted_inference

    with exit_on_bad_input():
        result = measure_encrypted_inference(model, samples, seed=seed, packing=packing)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    rows: dict = {}
    for key, value in result.items():
        if isinstance(value, dict):
            rows.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            rows[key] = value
    print_json_or_table(rows, False, f"encrypted inference ({model}, {packing} packing)")


# Commands defined in their own modules register themselves on `app` when imported.
from veil import cli_audits, cli_deploy, cli_tee  # noqa: E402, F401
