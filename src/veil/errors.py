"""Errors veil raises on purpose.

Every message says what was wrong and what to do about it; the CLI prints it as one line and
exits with status 2.
"""

from __future__ import annotations


class VeilError(Exception):
    """Base class of every error veil raises on purpose."""


class ConfigError(VeilError, ValueError):
    """A configuration value or function argument is invalid (names the argument and its range)."""


class PrivacyBudgetExceeded(VeilError):
    """A release would spend more privacy budget than the ledger allows."""


class ProtocolError(VeilError):
    """A cryptographic or network protocol cannot continue (too few parties, bad message, ...)."""


def check(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)
