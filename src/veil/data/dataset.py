"""The `Dataset` container that every loader in `veil.data` returns.

A `Dataset` holds raw (unscaled) features and says how to scale them; `veil.data.federate` fits
that scaling on the clients' training rows only, so no test value leaks into the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.errors import check

SCALINGS: tuple[str, ...] = ("standard", "fixed")


@dataclass(frozen=True)
class Dataset:
    """A labelled data set with raw features, validated on construction.

    Attributes:
        name: the data set's name, e.g. ``"digits"``.
        x: float32 ``[n, *feature_shape]``, raw (unscaled) features.
        y: int64 ``[n]``, labels in ``0 .. num_classes - 1``.
        num_classes: number of classes.
        feature_shape: shape of one example, e.g. ``(30,)`` or ``(1, 28, 28)``.
        scaling: ``"standard"`` (per-feature ``(x - mean) / std``, fitted on training rows) or
            ``"fixed"`` (``x / pixel_max``, a constant known in advance).
        pixel_max: the divisor for ``scaling == "fixed"``, else ``None``.
        sites: int64 ``[n]``, the site (e.g. bank) each row comes from, or ``None``.
        site_names: one name per site id, or ``None``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    feature_shape: tuple[int, ...]
    scaling: str
    pixel_max: float | None
    sites: np.ndarray | None
    site_names: tuple[str, ...] | None

    def __post_init__(self) -> None:
        check(self.x.dtype == np.float32, f"Dataset.x must be float32 (got {self.x.dtype})")
        check(self.y.dtype == np.int64, f"Dataset.y must be int64 (got {self.y.dtype})")
        check(
            self.x.shape[1:] == tuple(self.feature_shape),
            f"Dataset.x must have shape [n, *{self.feature_shape}] (got {self.x.shape})",
        )
        check(
            self.y.shape == self.x.shape[:1],
            f"Dataset.y must have shape [{self.x.shape[0]}] (got {self.y.shape})",
        )
        check(self.num_classes >= 1, f"Dataset.num_classes must be >= 1 (got {self.num_classes})")
        check(
            self.y.size == 0 or (self.y.min() >= 0 and self.y.max() < self.num_classes),
            f"Dataset.y must lie in 0..{self.num_classes - 1}",
        )
        check(
            self.scaling in SCALINGS,
            f"Dataset.scaling must be one of {SCALINGS} (got {self.scaling!r})",
        )
        if self.scaling == "fixed":
            check(
                self.pixel_max is not None and self.pixel_max > 0,
                f"Dataset.pixel_max must be > 0 when scaling is 'fixed' (got {self.pixel_max})",
            )
        check(
            (self.sites is None) == (self.site_names is None),
            "Dataset.sites and Dataset.site_names must be given together",
        )
        if self.sites is not None and self.site_names is not None:
            check(
                self.sites.dtype == np.int64 and self.sites.shape == self.y.shape,
                f"Dataset.sites must be int64 of shape {self.y.shape} (got {self.sites.dtype} "
                f"{self.sites.shape})",
            )
            check(
                self.sites.size == 0
                or (self.sites.min() >= 0 and self.sites.max() < len(self.site_names)),
                f"Dataset.sites must lie in 0..{len(self.site_names) - 1}",
            )

    @property
    def num_rows(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])
