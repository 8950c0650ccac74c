"""The privacy ledger: an append-only, crash-safe record of every release's DP events.

Each release appends one JSON line ``{"round", "subject", "events", "epsilon"}`` and is flushed
and fsynced *before* the caller may publish the release; a release that would push the subject's
ε past the budget is refused with `PrivacyBudgetExceeded` and nothing is written. ε is always
recomputed from the stored events (dp-accounting), never summed from stored numbers.

One process writes a ledger at a time. A subject is who the guarantee protects: ``"dataset"``
for central DP (every record or client of the federation), or one client's name for local DP.
Crash safety: a process killed mid-write
leaves at most a torn last line, which was never acknowledged (its release was never published),
so reading skips it and the ledger never under-counts a published release.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attr
import dp_accounting
from dp_accounting import dp_event

from veil.errors import ConfigError, PrivacyBudgetExceeded, check
from veil.privacy.accounting import ACCOUNTANTS, NEIGHBORING, compose, epsilon

FORMAT = "veil-privacy-ledger/1"
DEFAULT_SUBJECT = "dataset"


def event_to_json(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """A dp-accounting event as plain JSON: ``{"type": class name, field: value, ...}``."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for name, value in attr.asdict(event, recurse=False).items():
        if isinstance(value, dp_accounting.DpEvent):
            value = event_to_json(value)
        elif isinstance(value, list | tuple):
            value = [event_to_json(v) if isinstance(v, dp_accounting.DpEvent) else v for v in value]
        out[name] = value
    return out


def event_from_json(data: dict[str, Any]) -> dp_accounting.DpEvent:
    """Inverse of `event_to_json`; only dp-accounting's own event classes are accepted."""
    fields = dict(data)
    name = fields.pop("type", None)
    cls = getattr(dp_event, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, dp_accounting.DpEvent)):
        raise ConfigError(f"unknown DP event type in ledger: {name!r}")
    for key, value in fields.items():
        if isinstance(value, dict) and "type" in value:
            fields[key] = event_from_json(value)
        elif isinstance(value, list):
            fields[key] = [event_from_json(v) if isinstance(v, dict) else v for v in value]
    return cls(**fields)


@dataclass(frozen=True)
class SubjectEvent:
    """A DP event that protects one subject (e.g. one client's records), not the whole data set."""

    subject: str
    event: dp_accounting.DpEvent


def by_subject(events: Sequence[dp_accounting.DpEvent | SubjectEvent]) -> dict[str, list]:
    """Group a release's events by subject; a bare event protects ``DEFAULT_SUBJECT``."""
    grouped: dict[str, list] = defaultdict(list)
    for item in events:
        if isinstance(item, SubjectEvent):
            grouped[item.subject].append(item.event)
        else:
            grouped[DEFAULT_SUBJECT].append(item)
    return grouped


@dataclass(frozen=True)
class LedgerSettings:
    """How ε is computed and how much may be spent (the ledger file's first line)."""

    delta: float
    budget_epsilon: float | None = None
    accountant: str = "pld"
    neighboring: str = "add_remove"

    def __post_init__(self) -> None:
        check(0 < self.delta < 1, f"ledger delta must be in (0, 1) (got {self.delta})")
        check(
            self.budget_epsilon is None
            or (math.isfinite(self.budget_epsilon) and self.budget_epsilon > 0),
            f"ledger budget_epsilon must be > 0 (got {self.budget_epsilon})",
        )
        check(
            self.accountant in ACCOUNTANTS,
            f"accountant must be one of {list(ACCOUNTANTS)} (got {self.accountant!r})",
        )
        check(
            self.neighboring in NEIGHBORING,
            f"neighboring must be one of {list(NEIGHBORING)} (got {self.neighboring!r})",
        )


@dataclass
class PrivacyLedger:
    """An open ledger file; `record` is the only way to add to it."""

    path: Path | None  # None: kept in memory only (nothing persisted)
    settings: LedgerSettings
    events: dict[str, list[dp_accounting.DpEvent]] = field(
        default_factory=lambda: defaultdict(list)
    )
    releases: int = 0
    _epsilon_cache: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def in_memory(cls, settings: LedgerSettings) -> PrivacyLedger:
        """A ledger that enforces the budget but persists nothing (for throw-away runs)."""
        return cls(None, settings)

    @classmethod
    def open(cls, path: str | Path, settings: LedgerSettings) -> PrivacyLedger:
        """Open ``path`` (created if missing). An existing ledger must have the same settings:
        its spent budget carries over, which is the point of keeping it."""
        path = Path(path)
        if not path.exists():
            _create(path, {"format": FORMAT, **settings.__dict__})
            return cls(path, settings)
        ledger = cls.load(path)
        if ledger.settings != settings:
            raise ConfigError(
                f"ledger {path} was created with {ledger.settings}, not {settings}; "
                "use the same privacy settings or a new ledger path"
            )
        return ledger

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """An existing ledger with the settings it was created with."""
        settings, entries = read_entries(path)
        ledger = cls(Path(path), settings)
        for entry in entries:
            ledger.events[entry["subject"]].extend(event_from_json(e) for e in entry["events"])
        ledger.releases = len({(entry["round"], entry["time"]) for entry in entries})
        return ledger

    def summary(self) -> dict[str, Any]:
        """Spent and remaining ε of every subject, as JSON-able data."""
        budget = self.settings.budget_epsilon
        subjects = []
        for subject in sorted(self.events):
            spent = self.epsilon(subject)
            subjects.append(
                {
                    "subject": subject,
                    "releases": len(self.events[subject]),
                    "epsilon": spent,
                    "budget_epsilon": budget,
                    "remaining_epsilon": None if budget is None else max(budget - spent, 0.0),
                }
            )
        return {
            "path": str(self.path),
            "delta": self.settings.delta,
            "accountant": self.settings.accountant,
            "neighboring": self.settings.neighboring,
            "releases": self.releases,
            "subjects": subjects,
        }

    def epsilon(self, subject: str = DEFAULT_SUBJECT) -> float:
        """ε spent so far by ``subject`` (0 before any release)."""
        return self._epsilon_of(self.events.get(subject, []))

    def max_epsilon(self) -> float:
        """The largest ε any subject has spent: the guarantee that holds for everyone."""
        return max((self.epsilon(subject) for subject in self.events), default=0.0)

    def would_spend(
        self, events: Sequence[dp_accounting.DpEvent], subject: str = DEFAULT_SUBJECT
    ) -> float:
        """ε ``subject`` would have spent after also releasing ``events``."""
        return self._epsilon_of([*self.events.get(subject, []), *events])

    def record(
        self, round_index: int, events: Sequence[dp_accounting.DpEvent | SubjectEvent]
    ) -> float:
        """Persist a release's events (one line per subject, one fsync) and return the largest ε
        any of its subjects has now spent; or refuse the whole release.

        Raises `PrivacyBudgetExceeded` (writing nothing) if any subject would exceed the budget.
        """
        grouped = by_subject(events)
        if not grouped:
            return self.max_epsilon()
        after = {subject: self.would_spend(evs, subject) for subject, evs in grouped.items()}
        budget = self.settings.budget_epsilon
        over = {subject: e for subject, e in after.items() if budget is not None and e > budget}
        if over:
            subject = max(over, key=over.get)
            raise PrivacyBudgetExceeded(
                f"round {round_index} would raise ε for {subject!r} from "
                f"{self.epsilon(subject):.4g} to {over[subject]:.4g}, over the budget of {budget:g}"
                + (f" ({len(over)} subjects over)" if len(over) > 1 else "")
                + "; nothing was released"
            )
        now = time.time()
        lines = [
            {
                "round": round_index,
                "subject": subject,
                "events": [event_to_json(e) for e in evs],
                "epsilon": after[subject],
                "time": now,
            }
            for subject, evs in grouped.items()
        ]
        if self.path is not None:
            _append_lines(self.path, lines)
        for subject, evs in grouped.items():
            self.events[subject].extend(evs)
        self.releases += 1
        return max(after.values())

    def _epsilon_of(self, events: Sequence[dp_accounting.DpEvent]) -> float:
        """ε of a subject's events; subjects with the same history share one computation."""
        if not events:
            return 0.0
        composed = compose(events)
        key = repr(composed)
        if key not in self._epsilon_cache:
            s = self.settings
            self._epsilon_cache[key] = epsilon(composed, s.delta, s.accountant, s.neighboring)
        return self._epsilon_cache[key]


def read_entries(path: str | Path) -> tuple[LedgerSettings, list[dict[str, Any]]]:
    """The settings and complete entries of a ledger file; a torn last line is skipped."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise ConfigError(f"cannot read ledger {path}: {error.strerror or error}") from None
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not a veil privacy ledger (bad first line)") from None
    if not isinstance(header, dict) or header.pop("format", None) != FORMAT:
        raise ConfigError(f"{path} is not a veil privacy ledger (expected format {FORMAT})")
    settings = LedgerSettings(**header)
    entries = []
    complete = lines[1:-1]  # the text after the last newline was never acknowledged
    for number, line in enumerate(complete, start=2):
        try:
            entries.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(
                f"{path}: line {number} is corrupt (not a torn final write)"
            ) from None
    return settings, entries


def _append_lines(path: Path, objs: Sequence[dict[str, Any]]) -> None:
    """Append JSON lines and make them durable (one fsync) before returning.

    A failed write is cut back off, so the file never holds a torn line before a complete one.
    """
    data = "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in objs).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {path}")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _create(path: Path, header: dict[str, Any]) -> None:
    """Create the ledger atomically: header written to a temporary file, fsynced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write((json.dumps(header, sort_keys=True) + "\n").encode())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    if os.name == "posix":
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
