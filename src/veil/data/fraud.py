"""A synthetic, imbalanced card-fraud data set spread over several banks.

Real fraud data cannot be shipped, so veil generates it. Each bank serves a different
clientele (covariate shift) and sees a different fraud rate, which is what makes the banks a
natural, non-IID federation (`veil.data.site_partition`).
"""

from __future__ import annotations

import numpy as np

from veil.data.dataset import Dataset
from veil.errors import check

__all__ = ["TRANSACTION_FEATURES", "make_fraud"]

# The first columns of `make_fraud`'s features, in order; the remaining columns are generic.
TRANSACTION_FEATURES: tuple[str, ...] = (
    "amount",
    "hour",
    "merchant_risk",
    "velocity_24h",
    "distance_km",
    "card_present",
    "foreign",
    "account_age_days",
)


def make_fraud(
    *,
    num_banks: int = 5,
    rows_per_bank: int = 2000,
    fraud_rate: float = 0.03,
    num_features: int = 16,
    seed: int = 0,
) -> Dataset:
    """Generate card transactions from ``num_banks`` banks, labelled 1 for fraud, 0 otherwise.

    Generative model (``y`` is the label, ``b`` the bank, all bank effects drawn once per bank):

    - fraud rate of bank ``b``: ``fraud_rate * exp(N(0, 0.5^2))``, capped at 0.5; the bank has
      exactly ``round(rate * rows_per_bank)`` frauds (at least 1 and at most all but 1 row);
    - ``amount``: log-normal, ``log amount ~ N(3.5 + s_b + 0.7 y, 1)``, ``s_b ~ N(0, 0.3^2)``;
    - ``hour``: ``N(14 + h_b, 4^2) mod 24``; a fraud happens at night, ``N(3 + h_b, 2^2) mod 24``,
      with probability 0.4 (a signal a linear model cannot fully use), ``h_b ~ N(0, 1.5^2)``;
    - ``merchant_risk``: ``sigmoid(N(-1.5 + 0.8 y + r_b, 0.8^2))``, ``r_b ~ N(0, 0.5^2)``;
    - ``velocity_24h``: transactions on the card in the last day, ``Poisson(v_b (2 + 1.5 y))``,
      ``v_b = exp(N(0, 0.3^2))``;
    - ``distance_km``: log-normal, ``log distance ~ N(2 + d_b + 0.6 y, 1)``, ``d_b ~ N(0, 0.4^2)``;
    - ``card_present``: ``Bernoulli(0.75 + c_b)`` for genuine and ``Bernoulli(0.5 + c_b)`` for
      fraud, ``c_b ~ U(-0.1, 0.1)``;
    - ``foreign``: ``Bernoulli(f_b)`` genuine, ``Bernoulli(f_b + 0.1)`` fraud,
      ``f_b = 0.05 exp(N(0, 0.5^2))``;
    - ``account_age_days``: ``Gamma(2, 400 a_b)`` genuine, ``Gamma(1.5, 400 a_b)`` fraud,
      ``a_b = exp(N(0, 0.3^2))``;
    - ``num_features - 8`` generic (e.g. anonymised) features ``g_j ~ N(m_bj + w_j y, k_bj^2)``
      with bank shift ``m_bj ~ N(0, 0.5^2)``, scale ``k_bj = exp(N(0, 0.25^2))`` and fraud
      signal ``w_j = 0.7 * 0.6^j``.

    Rows are grouped by bank; ``sites`` is the bank index and ``site_names`` are
    ``("bank_0", ...)``. The same ``seed`` gives the same data. With the defaults a logistic
    regression on standardised features reaches a ROC AUC of about 0.9: learnable, not trivial.
    Scaling is ``"standard"``; column order is `TRANSACTION_FEATURES`, then the generic ones.
    """
    check(num_banks >= 1, f"num_banks must be >= 1 (got {num_banks})")
    check(rows_per_bank >= 2, f"rows_per_bank must be >= 2 (got {rows_per_bank})")
    check(0 < fraud_rate < 0.5, f"fraud_rate must be in (0, 0.5) (got {fraud_rate})")
    check(
        num_features >= len(TRANSACTION_FEATURES),
        f"num_features must be >= {len(TRANSACTION_FEATURES)} (got {num_features})",
    )
    rng = np.random.default_rng(seed)
    num_generic = num_features - len(TRANSACTION_FEATURES)

    # Bank effects, one value (or row of values) per bank.
    rate = np.minimum(fraud_rate * np.exp(rng.normal(0.0, 0.5, num_banks)), 0.5)
    amount_shift = rng.normal(0.0, 0.3, num_banks)
    hour_shift = rng.normal(0.0, 1.5, num_banks)
    risk_shift = rng.normal(0.0, 0.5, num_banks)
    velocity_scale = np.exp(rng.normal(0.0, 0.3, num_banks))
    distance_shift = rng.normal(0.0, 0.4, num_banks)
    card_present_shift = rng.uniform(-0.1, 0.1, num_banks)
    foreign_base = 0.05 * np.exp(rng.normal(0.0, 0.5, num_banks))
    age_scale = np.exp(rng.normal(0.0, 0.3, num_banks))
    generic_shift = rng.normal(0.0, 0.5, (num_banks, num_generic))
    generic_scale = np.exp(rng.normal(0.0, 0.25, (num_banks, num_generic)))
    generic_signal = 0.7 * 0.6 ** np.arange(num_generic)

    # Rows: labels with an exact fraud count per bank, then features given (bank, label).
    bank = np.repeat(np.arange(num_banks, dtype=np.int64), rows_per_bank)
    num_fraud = np.clip(np.round(rate * rows_per_bank).astype(np.int64), 1, rows_per_bank - 1)
    within_bank = rng.permuted(np.tile(np.arange(rows_per_bank), (num_banks, 1)), axis=1)
    y = (within_bank < num_fraud[:, None]).ravel().astype(np.int64)
    n = y.size

    night = (y == 1) & (rng.random(n) < 0.4)
    hour = np.where(night, rng.normal(3.0, 2.0, n), rng.normal(14.0, 4.0, n))
    logit_risk = rng.normal(-1.5 + 0.8 * y + risk_shift[bank], 0.8)
    columns = [
        np.exp(rng.normal(3.5 + amount_shift[bank] + 0.7 * y, 1.0)),
        np.mod(hour + hour_shift[bank], 24.0),
        1.0 / (1.0 + np.exp(-logit_risk)),
        rng.poisson(velocity_scale[bank] * (2.0 + 1.5 * y)),
        np.exp(rng.normal(2.0 + distance_shift[bank] + 0.6 * y, 1.0)),
        rng.random(n) < np.where(y == 1, 0.5, 0.75) + card_present_shift[bank],
        rng.random(n) < foreign_base[bank] + 0.1 * y,
        rng.gamma(np.where(y == 1, 1.5, 2.0), 400.0 * age_scale[bank]),
    ]
    generic = rng.normal(
        generic_shift[bank] + generic_signal * y[:, None], generic_scale[bank], (n, num_generic)
    )
    x = np.column_stack([*columns, generic]).astype(np.float32)
    return Dataset(
        name="fraud",
        x=x,
        y=y,
        num_classes=2,
        feature_shape=(num_features,),
        scaling="standard",
        pixel_max=None,
        sites=bank,
        site_names=tuple(f"bank_{b}" for b in range(num_banks)),
    )
