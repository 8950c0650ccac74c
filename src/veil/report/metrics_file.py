"""Reading and writing a run's output files, atomically.

A run rewrites ``metrics.json`` after every round, and a reader (a dashboard, a test, ``veil
report``) may open it at any moment. Writing in place could leave a half-written file behind if
the process dies mid-write. Instead the new content goes to a temporary file in the same
directory, is flushed and ``fsync``-ed, and then ``os.replace`` swaps it onto the target in one
atomic step (POSIX ``rename(2)``; ``MoveFileEx`` on Windows): a reader sees either the old file or
the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from veil.errors import ConfigError

_JSON_TYPE_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a crash never leaves a partial file.

    Missing parent directories are created. The temporary file ``.<name>.<random>.tmp`` lives next
    to the target (so the final rename never crosses file systems) and is removed if anything
    fails before the rename; the previous content of ``path``, if any, is then left untouched.
    The new file gets the usual permissions (``0o666`` minus the umask), not a temporary file's
    ``0o600``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see `write_text_atomic`).

    ``obj`` is serialised in memory first, so an object ``json`` cannot encode raises
    ``TypeError`` before any file is touched. Non-finite floats are written as ``NaN`` /
    ``Infinity`` (what Python's ``json`` reads back), so a diverged loss does not abort a run.
    """
    write_text_atomic(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``metrics.json`` written by ``veil run``; raise `ConfigError` if it is unusable.

    The file must exist and hold one JSON object; its schema is checked by whoever consumes it
    (e.g. `veil.report.render_report`).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"metrics file {source} does not exist; run `veil run --out DIR` and pass "
            "DIR/metrics.json"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"metrics file {source} is a directory; pass the metrics.json file inside it"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"metrics file {source} is not UTF-8 text ({error.reason} at byte {error.start}); "
            "pass the metrics.json written by `veil run`"
        ) from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"metrics file {source} is not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno}); pass the metrics.json written by `veil run`"
        ) from None
    if not isinstance(metrics, dict):
        raise ConfigError(
            f"metrics file {source} holds a JSON {_JSON_TYPE_NAMES[type(metrics)]}, not an object; "
            "pass the metrics.json written by `veil run`"
        )
    return metrics


def _fsync_directory(directory: Path) -> None:
    """Make a completed rename durable on POSIX; Windows cannot open a directory, so skip it."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
