"""The generated keyboard workload: sizes, determinism, a Zipfian vocabulary, personal skew."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from veil.data.keyboard import PERSONAL_WORDS_PER_PHONE, KeyboardData, make_keyboard
from veil.errors import ConfigError


@pytest.fixture(scope="module")
def keyboard():
    return make_keyboard(num_phones=50_000, vocab_size=500, words_per_phone=4, seed=3)


def test_sizes_types_and_vocabulary(keyboard):
    assert keyboard.words.shape == (50_000, 4) and keyboard.words.dtype == np.int64
    assert keyboard.num_phones == 50_000 and keyboard.vocab_size == 500
    assert keyboard.vocab[:2] == ("w0000", "w0001") and keyboard.vocab[-1] == "w0499"
    assert len(set(keyboard.vocab)) == 500
    assert keyboard.words.min() >= 0 and keyboard.words.max() < 500
    assert make_keyboard(vocab_size=12_345, num_phones=3).vocab[-1] == "w12344"


def test_true_frequencies_are_the_shares_of_typed_words(keyboard):
    counts = np.bincount(keyboard.words.ravel(), minlength=500)
    np.testing.assert_allclose(keyboard.true_frequencies, counts / counts.sum())
    assert keyboard.true_frequencies.sum() == pytest.approx(1.0)
    assert keyboard.popularity.sum() == pytest.approx(1.0)


def test_same_seed_same_words_other_seed_other_words():
    a, b = make_keyboard(num_phones=500, seed=5), make_keyboard(num_phones=500, seed=5)
    c = make_keyboard(num_phones=500, seed=6)
    np.testing.assert_array_equal(a.words, b.words)
    np.testing.assert_array_equal(a.popularity, b.popularity)
    assert not np.array_equal(a.words, c.words)


def _log_log_slope(frequencies: np.ndarray, ranks: int) -> float:
    top = np.sort(frequencies)[::-1][:ranks]
    return np.polyfit(np.log(np.arange(1, ranks + 1)), np.log(top), 1)[0]


@pytest.mark.parametrize("exponent", [0.8, 1.1, 1.5])
def test_popularity_is_zipfian_with_the_given_exponent(exponent):
    data = make_keyboard(num_phones=100_000, vocab_size=400, zipf_exponent=exponent, seed=1)
    assert _log_log_slope(data.popularity, 400) == pytest.approx(-exponent)
    # The typed words follow the law too (top ranks, where counts are large).
    assert _log_log_slope(data.true_frequencies, 50) == pytest.approx(-exponent, abs=0.1)


def test_typed_words_follow_the_law_despite_personal_words(keyboard):
    tv_distance = np.abs(keyboard.true_frequencies - keyboard.popularity).sum() / 2
    assert tv_distance < 0.03


def test_personal_words_make_a_phone_repeat_itself():
    def repeat_rate(weight: float) -> float:
        words = make_keyboard(
            num_phones=20_000, vocab_size=1000, words_per_phone=2, personal_weight=weight
        ).words
        return float((words[:, 0] == words[:, 1]).mean())

    assert repeat_rate(0.0) < 0.05
    # Both words personal (weight^2), then the same one of the personal words (1/3 or more).
    assert repeat_rate(0.5) > 0.25 / PERSONAL_WORDS_PER_PHONE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_phones": 0}, r"num_phones must be >= 1 \(got 0\)"),
        ({"vocab_size": 0}, r"vocab_size must be >= 1 \(got 0\)"),
        ({"words_per_phone": 0}, r"words_per_phone must be >= 1 \(got 0\)"),
        ({"zipf_exponent": 0.0}, r"zipf_exponent must be > 0 \(got 0.0\)"),
        ({"zipf_exponent": -1.1}, r"zipf_exponent must be > 0 \(got -1.1\)"),
        ({"personal_weight": 1.5}, r"personal_weight must be in \[0, 1\] \(got 1.5\)"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_keyboard(**kwargs)


def test_keyboard_data_validates_itself():
    good = make_keyboard(num_phones=10, vocab_size=5)
    with pytest.raises(ConfigError, match="must be a non-empty int64"):
        dataclasses.replace(good, words=good.words.astype(np.int32))
    with pytest.raises(ConfigError, match="must be a non-empty int64"):
        dataclasses.replace(good, words=good.words.ravel())
    with pytest.raises(ConfigError, match=r"words must lie in 0..4"):
        dataclasses.replace(good, words=good.words + 5)
    with pytest.raises(ConfigError, match=r"true_frequencies must have shape \[5\]"):
        dataclasses.replace(good, true_frequencies=np.ones(4) / 4)
    with pytest.raises(ConfigError, match=r"popularity must have shape \[5\]"):
        dataclasses.replace(good, popularity=np.ones(6) / 6)
    with pytest.raises(ConfigError, match="vocab must hold at least one word"):
        KeyboardData(np.zeros((1, 1), np.int64), (), np.ones(0), np.ones(0))
