"""Crash-safe server state: one checkpoint per round, committed by the privacy ledger.

A round's new `ServerState` (model, optimizer state, the links' states, round number) is written
*before* its DP events reach the ledger, and the ledger entry is what commits it:

    1. checkpoint ``round-r`` (atomic: temporary file, fsync, rename, fsync of the folder)
    2. ledger entry of round r (append, fsync)   ← the release; nothing was published before
    3. only now is the new model published (sent to the sites, written to metrics.json)

`CheckpointStore.resume` reads the ledger as the source of truth: a round-r checkpoint whose
ledger entry exists is committed (a kill between 2 and 3 loses nothing); one whose entry is
missing was never released and is discarded, so round r runs again and is recorded once (a
kill between 1 and 2 spends nothing). ε is therefore neither lost nor counted twice. A ledger
that is behind or ahead of the checkpoints by more than that is refused: it was edited by hand.

Files are JSON (``round``, ``ledger_releases``, the config digest, metrics so far) with the state
as a base64 ``torch.save`` payload, read back with ``weights_only=True`` (no code runs on load).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from veil.config import RunConfig
from veil.errors import ConfigError
from veil.fl.round import ServerState
from veil.privacy.ledger import PrivacyLedger
from veil.report.metrics_file import write_json_atomic

FORMAT = "veil-server-checkpoint/1"
log = logging.getLogger("veil.server")


@dataclass(frozen=True)
class Checkpoint:
    """The server after a round: its state, the ledger's release count once that round is
    recorded, and what metrics.json reports so far (``rounds[]`` and bytes sent per round)."""

    state: ServerState
    ledger_releases: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    bytes_per_client: list[float] = field(default_factory=list)


def config_digest(config: RunConfig) -> str:
    """SHA-256 of what the run computes (the config without its ``deployment`` section)."""
    data = config.model_dump(mode="json", exclude={"deployment"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class CheckpointStore:
    """The checkpoints of one run in ``folder`` (``round-000001.json``, ...)."""

    def __init__(self, folder: str | Path, digest: str):
        self.folder = Path(folder)
        self.digest = digest

    def path(self, round_index: int) -> Path:
        return self.folder / f"round-{round_index:06d}.json"

    def save(self, checkpoint: Checkpoint) -> Path:
        """Write ``checkpoint`` atomically; it stays uncommitted until its ledger entry exists."""
        buffer = io.BytesIO()
        state = checkpoint.state
        torch.save(
            {
                "params": {k: v.detach().cpu() for k, v in state.params.items()},
                "optimizer_state": state.optimizer_state,
                "encoder_state": state.encoder_state,
                "aggregator_state": state.aggregator_state,
            },
            buffer,
        )
        document = {
            "format": FORMAT,
            "config_digest": self.digest,
            "round": state.round_index,
            "ledger_releases": checkpoint.ledger_releases,
            "rounds": checkpoint.rounds,
            "bytes_per_client": checkpoint.bytes_per_client,
            "state": base64.b64encode(buffer.getvalue()).decode("ascii"),
        }
        path = self.path(state.round_index)
        write_json_atomic(document, path)
        return path

    def load(self, path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
        """Read a checkpoint of this run (same config digest) with its tensors on ``device``."""
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            payload = base64.b64decode(document["state"], validate=True)
            state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
            round_index = int(document["round"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise ConfigError(f"checkpoint {path} is unreadable ({error})") from None
        if document["config_digest"] != self.digest:
            raise ConfigError(
                f"checkpoint {path} belongs to a run with another config; restart with the "
                "same config, or use a new output folder"
            )
        return Checkpoint(
            ServerState(
                state["params"],
                state["optimizer_state"],
                state["encoder_state"],
                state["aggregator_state"],
                round_index,
            ),
            int(document["ledger_releases"]),
            list(document["rounds"]),
            [float(b) for b in document["bytes_per_client"]],
        )

    def resume(
        self, ledger: PrivacyLedger | None, device: torch.device | str = "cpu"
    ) -> Checkpoint | None:
        """The last committed checkpoint (None: start from round 1), discarding a newer one
        the ledger never recorded. Without a ledger (no DP) every checkpoint is committed."""
        for path in sorted(self.folder.glob("round-*.json"), reverse=True):
            checkpoint = self.load(path, device)
            if ledger is None or ledger.releases == checkpoint.ledger_releases:
                return checkpoint
            if ledger.releases == checkpoint.ledger_releases - 1:
                log.warning(
                    "round %d was computed but never released (no ledger entry): it runs again",
                    checkpoint.state.round_index,
                )
                path.unlink()
                continue
            raise ConfigError(
                f"ledger {ledger.path} holds {ledger.releases} releases but checkpoint {path} "
                f"expects {checkpoint.ledger_releases}: the ledger or the checkpoints were "
                "changed by hand; restore them, or start a new run in a new output folder"
            )
        return None

    def prune(self, keep: int) -> None:
        """Delete the checkpoints of rounds before ``keep`` (superseded by a committed one)."""
        for path in self.folder.glob("round-*.json"):
            if int(path.stem.removeprefix("round-")) < keep:
                path.unlink()
