"""``veil attack``, ``veil audit`` and ``veil tradeoff``: what a run protects against, measured.

Each command attacks or audits the run a config describes. With ``--out DIR`` (default
``runs/latest``) the result is also attached to that run's ``report.html``; if ``DIR`` does not
hold a finished run of the same config, the run is made there first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from veil.cli import app, exit_on_bad_input, run_with_progress, stderr
from veil.errors import ConfigError

ATTACKS = ("gradient-inversion", "membership", "model-inversion", "poisoning")
OutOption = Annotated[
    Path, typer.Option("--out", help="Run folder whose report.html gets the results.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def ensure_run(config, out: Path) -> None:
    """Make sure ``out`` holds a finished run of ``config`` (run it there if not)."""
    from veil.experiment import build_experiment, run_experiment
    from veil.report import read_metrics

    try:
        metrics = read_metrics(out / "metrics.json")
    except ConfigError:
        metrics = None
    same = metrics and metrics.get("config") == config.model_dump(mode="json")
    if same and metrics.get("final"):
        return
    stderr.print(Text(f"running {config.name} in {out} first (the report the results go to)"))
    if config.task == "federated_training":
        run_with_progress(build_experiment(config), out)
    else:
        run_experiment(config, out)


def publish(result: Any, name: str, config, out: Path, as_json: bool) -> None:
    """Attach ``result.report_section()`` to the run in ``out``; print its JSON or a summary."""
    from veil.report.attached import attach_section

    ensure_run(config, out)
    attach_section(out, name, result.report_section())
    document = result.to_json()
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        stderr.print_json(data=document)
        typer.echo(str(out / "report.html"))


@app.command()
def attack(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(ATTACKS)}.")],
    config: Annotated[Path, typer.Argument(help="YAML run config of the run to attack.")],
    out: OutOption = Path("runs/latest"),
    as_json: JsonOption = False,
    seed: Annotated[int, typer.Option(help="Seed of the attack's own randomness.")] = 0,
    num_malicious: Annotated[
        int, typer.Option(help="poisoning: how many clients the attacker controls.")
    ] = 1,
) -> None:
    """Run an attack against the run CONFIG describes and report what it recovers."""
    from veil.config import load_config

    with exit_on_bad_input():
        if name not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
        run_config = load_config(config)
        result = run_attack(name, run_config, seed, num_malicious)
        publish(result, name, run_config, out, as_json)


def run_attack(name: str, config, seed: int, num_malicious: int = 1):
    """Dispatch ``veil attack NAME``; every attack returns ``to_json`` and ``report_section``."""
    if name == "gradient-inversion":
        from veil.attacks.gradient_inversion_experiment import run_gradient_inversion

        return run_gradient_inversion(
            config.data.dataset, seed=seed, **model_options(config), **dp_options(config)
        )
    if name == "membership":
        from veil.attacks.membership import run_membership_attack

        return run_membership_attack(config, seed=seed)
    if name == "model-inversion":
        from veil.attacks.model_inversion import run_model_inversion

        epsilon = config.privacy.target_epsilon if config.privacy else None
        return run_model_inversion(
            config.data.dataset,
            epsilon=epsilon,
            model=config.model.name,
            hidden=tuple(config.model.hidden),
            seed=seed,
        )
    from veil.attacks.poisoning_experiment import run_poisoning_on_config

    return run_poisoning_on_config(config, num_malicious=num_malicious, seed=seed)


def model_options(config) -> dict[str, Any]:
    """The config's model, for attacks that train or probe their own copy of it."""
    m = config.model
    return {"model": m.name, "hidden": tuple(m.hidden), "activation": m.activation}


def dp_options(config) -> dict[str, Any]:
    """The DP defence and the SecAgg+ sum size that ``config`` would use: its clip norm and
    calibrated σ (client-level DP), and its clients per round."""
    from veil.experiment import build_local_training, clients_per_round, federated_data
    from veil.privacy.federated import dp_plan

    data = federated_data(config)  # no model or keys: only the split and σ's calibration
    options = {"secagg_clients": max(2, clients_per_round(config, data.num_clients))}
    if config.privacy is not None:
        plan = dp_plan(config, build_local_training(config), data.train_sizes)
        options["clip_norm"] = config.privacy.clip_norm
        options["noise_multiplier"] = plan.noise_multiplier
        options["delta"] = config.privacy.delta
    return options


@app.command()
def audit(
    config: Annotated[Path, typer.Argument(help="YAML run config with a privacy section.")],
    out: OutOption = Path("runs/latest"),
    as_json: JsonOption = False,
    runs: Annotated[
        int | None, typer.Option(help="Runs with and without the canary (default: the audit's).")
    ] = None,
    confidence: Annotated[float, typer.Option(help="Clopper–Pearson confidence.")] = 0.95,
    black_box: Annotated[
        bool, typer.Option("--black-box", help="Input canary, final model only (sample level).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the threshold-selection split.")] = 0,
) -> None:
    """Empirical lower bound on ε by canaries, next to the ε the run claims."""
    from veil.audit.canary import run_audit
    from veil.config import load_config

    with exit_on_bad_input():
        run_config = load_config(config)
        result = run_audit(
            run_config,
            num_runs=runs,
            confidence=confidence,
            white_box=not black_box,
            seed=seed,
        )
        publish(result, "audit", run_config, out, as_json)


@app.command()
def fairness(
    config: Annotated[Path, typer.Argument(help="YAML run config (federated training).")],
    out: OutOption = Path("runs/latest"),
    as_json: JsonOption = False,
    seed: Annotated[int, typer.Option(help="Seed of the study's runs.")] = 0,
) -> None:
    """Per-site and per-class accuracy, worst-group gap and equalized odds: IID vs non-IID,
    with and without DP (DP's disparate impact, Bagdasaryan et al. 2019)."""
    from veil.audit.fairness_study import run_fairness_study
    from veil.config import load_config

    with exit_on_bad_input():
        run_config = load_config(config)
        publish(run_fairness_study(run_config, seed=seed), "fairness", run_config, out, as_json)


@app.command()
def tradeoff(
    config: Annotated[Path, typer.Argument(help="YAML run config (federated training).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for tradeoff.md and tradeoff.html.")
    ] = Path("runs/tradeoff"),
    as_json: JsonOption = False,
) -> None:
    """Privacy–utility–cost table: the config under no protection, DP, SecAgg+, HE, combined."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from veil.audit.tradeoff import run_tradeoff, write_tradeoff
    from veil.config import load_config
    from veil.experiment import prepare_output_directory

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with exit_on_bad_input(), Progress(*columns, console=stderr) as progress:
        base = load_config(config)
        prepare_output_directory(out)
        task = progress.add_task("trade-off", total=None)

        def on_setting(index: int, total: int, name: str) -> None:
            progress.update(task, completed=index, total=total, description=f"trade-off: {name}")

        result = run_tradeoff(base, on_setting=on_setting)
        progress.update(task, completed=len(result["rows"]))
        write_tradeoff(result, out)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo((out / "tradeoff.md").read_text(encoding="utf-8"), nl=False)
