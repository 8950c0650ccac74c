"""Next-word frequency estimation from many phones under local DP, judged against the truth.

Each phone samples one of the words it typed (uniformly) and sends it through a frequency oracle
of `veil.privacy.ldp`; the server turns the support counts into word frequencies. Since the
sampled word of a phone is one of its words with probability ``(its count of v) / m``, the
estimate is unbiased for the share of all typed words that are ``v`` (``m`` = words per phone).

Threat model: the server is untrusted. A phone's report is a randomized function of one word,
and every output is at most ``e^ε`` times likelier under any word than under any other, so the
report is ε-LDP with respect to everything the phone typed, whatever ``m`` is. A phone that
takes part in ``T`` collections spends ``T ε``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from dp_accounting import dp_event

from veil.data.keyboard import KeyboardData
from veil.errors import check
from veil.privacy.ldp import collect_support, count_variance, estimate_counts, make_oracle

__all__ = ["FrequencyEstimate", "estimate_word_frequencies", "to_metrics"]

# Sizes of the top lists the error metrics look at, and of the table `to_metrics` includes.
_TOP_SMALL, _TOP_LARGE, _TOP_TABLE = 10, 100, 20


@dataclass(frozen=True)
class FrequencyEstimate:
    """Estimated word frequencies and their error against the truth.

    Attributes:
        frequencies: float64 ``[vocab_size]``, the unbiased estimates (may be negative).
        true_frequencies: float64 ``[vocab_size]``, the truth (`KeyboardData.true_frequencies`).
        vocab: the word string of each id.
        oracle: the oracle used, ``"grr"``, ``"sue"`` or ``"oue"`` (``"auto"`` resolved).
        epsilon: each phone's report is ``epsilon``-LDP.
        num_phones: how many phones reported, once each.
        dp_event: the dp-accounting event of one phone's report (see `ldp.oracle_dp_event`).
        theoretical_std: the standard deviation of a rare word's estimate, ``sqrt(Var*) / n``.
        linf_error: ``max_v |f̂_v - f_v|``.
        l1_error: ``Σ_v |f̂_v - f_v|``.
        top10_mae: mean ``|f̂_v - f_v|`` over the 10 truly most frequent words.
        top100_mae: the same over the 100 most frequent (all words if fewer).
        top10_precision: share of the estimated top 10 that are truly in the top 10.
        top10_recall: share of the true top 10 that are in the estimated top 10.
    """

    frequencies: np.ndarray
    true_frequencies: np.ndarray
    vocab: tuple[str, ...]
    oracle: str
    epsilon: float
    num_phones: int
    dp_event: dp_event.DpEvent
    theoretical_std: float
    linf_error: float
    l1_error: float
    top10_mae: float
    top100_mae: float
    top10_precision: float
    top10_recall: float


def _top(frequencies: np.ndarray, count: int) -> np.ndarray:
    """Ids of the ``count`` largest entries, largest first (ties: smaller id first)."""
    return np.argsort(-frequencies, kind="stable")[:count]


def estimate_word_frequencies(
    data: KeyboardData, *, oracle: str, epsilon: float, generator: torch.Generator
) -> FrequencyEstimate:
    """Collect one ε-LDP report per phone with ``oracle`` and estimate every word's frequency.

    ``oracle`` is ``"grr"``, ``"sue"``, ``"oue"`` or ``"auto"`` (the smaller-variance of GRR and
    OUE for this vocabulary and ε). ``generator`` is privacy noise, used both for each phone's
    choice of word and for the oracle: use `veil.randomness.noise_generator`.
    """
    check(
        data.vocab_size >= 2,
        f"vocab_size must be >= 2 to estimate word frequencies (got {data.vocab_size})",
    )
    chosen = make_oracle(oracle, data.vocab_size, epsilon)
    words = torch.from_numpy(data.words)
    pick = torch.randint(0, words.shape[1], (data.num_phones, 1), generator=generator)
    items = words.gather(1, pick).squeeze(1)
    support, event = collect_support(chosen, items, generator)
    frequencies = (estimate_counts(chosen, support, data.num_phones) / data.num_phones).numpy()

    truth = data.true_frequencies
    error = np.abs(frequencies - truth)
    true_top = _top(truth, _TOP_SMALL)
    # Words tied with the 10th most frequent count as top-10 words for precision.
    in_true_top = truth >= truth[true_top[-1]]
    estimated_top = _top(frequencies, _TOP_SMALL)
    return FrequencyEstimate(
        frequencies=frequencies,
        true_frequencies=truth,
        vocab=data.vocab,
        oracle=chosen.name,
        epsilon=float(epsilon),
        num_phones=data.num_phones,
        dp_event=event,
        theoretical_std=float(np.sqrt(count_variance(chosen, data.num_phones))) / data.num_phones,
        linf_error=float(error.max()),
        l1_error=float(error.sum()),
        top10_mae=float(error[true_top].mean()),
        top100_mae=float(error[_top(truth, _TOP_LARGE)].mean()),
        top10_precision=float(in_true_top[estimated_top].mean()),
        top10_recall=float(np.isin(true_top, estimated_top).mean()),
    )


def to_metrics(estimate: FrequencyEstimate) -> dict:
    """A JSON-serializable summary: the scalar metrics and a top-20 table of words.

    ``top_words`` lists the 20 truly most frequent words with their true and estimated frequency.
    """
    return {
        "oracle": estimate.oracle,
        "epsilon": estimate.epsilon,
        "num_phones": estimate.num_phones,
        "vocab_size": len(estimate.vocab),
        "theoretical_std": estimate.theoretical_std,
        "linf_error": estimate.linf_error,
        "l1_error": estimate.l1_error,
        "top10_mae": estimate.top10_mae,
        "top100_mae": estimate.top100_mae,
        "top10_precision": estimate.top10_precision,
        "top10_recall": estimate.top10_recall,
        "top_words": [
            {
                "word": estimate.vocab[v],
                "true_frequency": float(estimate.true_frequencies[v]),
                "estimated_frequency": float(estimate.frequencies[v]),
            }
            for v in _top(estimate.true_frequencies, _TOP_TABLE).tolist()
        ],
    }
