"""The ``veil`` command line (typer + rich).

Contract (tests and benchmarks rely on it): exit code 0 on success, 2 on bad input with one clear
line on stderr and no traceback. See DESIGN.md for each command's output.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
def main(
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
    from veil.experiment import build_experiment, execute, prepare_output_directory

    with exit_on_bad_input():
        run_config = load_config(config or DEFAULT_CONFIG)
        experiment = build_experiment(run_config)  # every config error surfaces here, before work
        prepare_output_directory(out)
        rounds = run_config.federation.rounds
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=stderr, transient=False) as progress:
            task = progress.add_task(escape(f"{run_config.name} rounds"), total=rounds, status="")

            def on_round(record: dict) -> None:
                status = f"acc {record['accuracy']:.3f}  loss {record['loss']:.3f}"
                progress.update(task, advance=1, status=status)

            metrics = execute(experiment, out, on_round=on_round)
    final = metrics["final"]
    stderr.print(
        f"accuracy {final['accuracy']:.4f}  loss {final['loss']:.4f}  ({final['seconds']:.1f} s)"
    )
    stderr.print(Text(f"claim: {final['claim']}"))
    typer.echo(str(out / "report.html"))


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
