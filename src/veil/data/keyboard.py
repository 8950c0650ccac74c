"""A generated next-word keyboard workload: many phones, a Zipfian vocabulary, known frequencies.

Keyboard text cannot be shipped, so veil generates the part of it that frequency estimation
needs: which words each phone typed. Word popularity follows Zipf's law, and each phone leans
towards a few personal words of its own, so the phones are not identically distributed. The true
global word frequencies are known, which is what lets a local-DP run (`veil.privacy.ldp_keyboard`)
report its estimation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.errors import check

__all__ = ["PERSONAL_WORDS_PER_PHONE", "KeyboardData", "make_keyboard"]

# How many personal words each phone leans towards (see `make_keyboard`).
PERSONAL_WORDS_PER_PHONE = 3


@dataclass(frozen=True)
class KeyboardData:
    """The words typed on many phones, with the truth a frequency estimate is judged against.

    Attributes:
        words: int64 ``[num_phones, words_per_phone]``, word ids in ``0 .. vocab_size - 1``.
        vocab: the word string of each id, e.g. ``("w0000", "w0001", ...)``.
        popularity: float64 ``[vocab_size]``, the Zipf law the words were drawn from (sums to 1).
        true_frequencies: float64 ``[vocab_size]``, the share of all typed words that are each
            word (sums to 1): the quantity a frequency oracle estimates.
    """

    words: np.ndarray
    vocab: tuple[str, ...]
    popularity: np.ndarray
    true_frequencies: np.ndarray

    def __post_init__(self) -> None:
        size = len(self.vocab)
        check(size >= 1, "KeyboardData.vocab must hold at least one word")
        check(
            self.words.dtype == np.int64 and self.words.ndim == 2 and self.words.size >= 1,
            f"KeyboardData.words must be a non-empty int64 [num_phones, words_per_phone] array "
            f"(got {self.words.dtype} with shape {self.words.shape})",
        )
        check(
            self.words.min() >= 0 and self.words.max() < size,
            f"KeyboardData.words must lie in 0..{size - 1}",
        )
        for name in ("popularity", "true_frequencies"):
            value = getattr(self, name)
            check(
                value.shape == (size,),
                f"KeyboardData.{name} must have shape [{size}] (got {value.shape})",
            )

    @property
    def num_phones(self) -> int:
        """How many phones typed words."""
        return self.words.shape[0]

    @property
    def vocab_size(self) -> int:
        """How many distinct words the vocabulary holds."""
        return len(self.vocab)


def make_keyboard(
    *,
    num_phones: int = 10_000,
    vocab_size: int = 1000,
    words_per_phone: int = 1,
    zipf_exponent: float = 1.1,
    personal_weight: float = 0.2,
    seed: int = 0,
) -> KeyboardData:
    """Generate the words ``num_phones`` phones typed over a ``vocab_size``-word vocabulary.

    Generative model (all draws from ``numpy.random.default_rng(seed)``, so the same ``seed``
    gives the same data):

    - popularity: the word of rank ``r = 1 .. vocab_size`` has probability ``∝ r^-s``
      (``s = zipf_exponent``); ranks are assigned to word ids by a random permutation;
    - each phone draws `PERSONAL_WORDS_PER_PHONE` personal words from the popularity law;
    - each typed word is, with probability ``personal_weight``, one of the phone's personal words
      (uniformly), and otherwise a fresh draw from the popularity law.

    Since the personal words follow the popularity law too, every typed word has the Zipf law as
    its marginal; the personal words only make each phone's words skewed and correlated.
    ``true_frequencies`` are the empirical shares of the typed words, not the law.
    """
    check(num_phones >= 1, f"num_phones must be >= 1 (got {num_phones})")
    check(vocab_size >= 1, f"vocab_size must be >= 1 (got {vocab_size})")
    check(words_per_phone >= 1, f"words_per_phone must be >= 1 (got {words_per_phone})")
    check(zipf_exponent > 0, f"zipf_exponent must be > 0 (got {zipf_exponent})")
    check(0 <= personal_weight <= 1, f"personal_weight must be in [0, 1] (got {personal_weight})")
    rng = np.random.default_rng(seed)

    by_rank = np.arange(1, vocab_size + 1, dtype=np.float64) ** -zipf_exponent
    popularity = by_rank[rng.permutation(vocab_size)]
    popularity /= popularity.sum()

    shape = (num_phones, words_per_phone)
    personal = rng.choice(vocab_size, size=(num_phones, PERSONAL_WORDS_PER_PHONE), p=popularity)
    fresh = rng.choice(vocab_size, size=shape, p=popularity)
    which = rng.integers(0, PERSONAL_WORDS_PER_PHONE, size=shape)
    use_personal = rng.random(shape) < personal_weight
    words = np.where(use_personal, np.take_along_axis(personal, which, axis=1), fresh)

    width = max(4, len(str(vocab_size - 1)))
    return KeyboardData(
        words=words.astype(np.int64),
        vocab=tuple(f"w{i:0{width}d}" for i in range(vocab_size)),
        popularity=popularity,
        true_frequencies=np.bincount(words.ravel(), minlength=vocab_size) / words.size,
    )
