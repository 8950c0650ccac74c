"""The base of every run-config section: frozen, and unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def reject_unused(section: BaseModel, used_by: dict[str, tuple[str, ...]], selector: str) -> None:
    """Refuse keys that the chosen ``selector`` value would silently ignore."""
    chosen = getattr(section, selector)
    for key, users in used_by.items():
        if getattr(section, key) is not None and chosen not in users:
            raise ValueError(
                f"{key} applies only to {selector} {' or '.join(users)} (got {selector} {chosen!r})"
            )
