"""Next-word frequency estimation under local DP, end to end on the generated keyboard workload."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from veil.data.keyboard import make_keyboard
from veil.errors import ConfigError
from veil.privacy.ldp import make_oracle, oracle_dp_event
from veil.privacy.ldp_keyboard import estimate_word_frequencies, to_metrics
from veil.randomness import noise_generator

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")


def _generator(stream: int = 0):
    return noise_generator(seed_for_testing=2014, stream=stream)


@pytest.fixture(scope="module")
def keyboard():
    return make_keyboard(num_phones=20_000, vocab_size=200, seed=0)


@pytest.fixture(scope="module")
def estimate(keyboard):
    return estimate_word_frequencies(keyboard, oracle="auto", epsilon=2.0, generator=_generator())


def test_auto_recovers_the_top_ten_words(estimate):
    # 200 words at ε = 2: 3e^2 + 2 ≈ 24 < 200, so OUE; a rare word's estimate has std ≈ 0.006.
    assert estimate.oracle == "oue" and estimate.epsilon == 2.0 and estimate.num_phones == 20_000
    assert estimate.theoretical_std == pytest.approx(
        math.sqrt(4 * math.exp(2) / (math.exp(2) - 1) ** 2 / 20_000)
    )
    assert estimate.top10_recall >= 0.8 and estimate.top10_precision >= 0.8


def test_errors_are_consistent_with_the_estimate_and_the_theory(keyboard, estimate):
    error = np.abs(estimate.frequencies - keyboard.true_frequencies)
    assert estimate.linf_error == pytest.approx(error.max())
    assert estimate.l1_error == pytest.approx(error.sum())
    top = np.argsort(-keyboard.true_frequencies, kind="stable")
    assert estimate.top10_mae == pytest.approx(error[top[:10]].mean())
    assert estimate.top100_mae == pytest.approx(error[top[:100]].mean())
    # Mean absolute error of a normal estimate is std * sqrt(2/π); L∞ over 200 words < 4 std.
    std = estimate.theoretical_std
    assert estimate.l1_error / 200 == pytest.approx(std * math.sqrt(2 / math.pi), rel=0.15)
    assert estimate.linf_error < 4 * std
    assert estimate.frequencies.sum() == pytest.approx(1.0, abs=4 * math.sqrt(200) * std)
    assert estimate.dp_event == oracle_dp_event(make_oracle("oue", 200, 2.0))


@pytest.mark.parametrize("oracle", ["grr", "sue", "oue"])
def test_every_oracle_is_unbiased_over_repeated_collections(oracle):
    data = make_keyboard(num_phones=4000, vocab_size=20, words_per_phone=3, seed=1)
    runs = [
        estimate_word_frequencies(data, oracle=oracle, epsilon=1.0, generator=_generator(run))
        for run in range(60)
    ]
    assert {r.oracle for r in runs} == {oracle}
    mean = np.mean([r.frequencies for r in runs], axis=0)
    # Sampling one of three words per phone adds a little variance on top of the oracle's.
    standard_error = runs[0].theoretical_std / math.sqrt(len(runs))
    assert np.abs(mean - data.true_frequencies).max() < 4.5 * standard_error


def test_to_metrics_is_json_with_a_top_twenty_table(keyboard, estimate):
    metrics = json.loads(json.dumps(to_metrics(estimate)))
    assert metrics["oracle"] == "oue" and metrics["epsilon"] == 2.0
    assert metrics["num_phones"] == 20_000 and metrics["vocab_size"] == 200
    for name in ("theoretical_std", "linf_error", "l1_error", "top10_mae", "top100_mae"):
        assert metrics[name] == pytest.approx(getattr(estimate, name))
    assert metrics["top10_recall"] == estimate.top10_recall
    table = metrics["top_words"]
    assert len(table) == 20
    frequencies = [row["true_frequency"] for row in table]
    assert frequencies == sorted(frequencies, reverse=True)
    first = int(np.argmax(keyboard.true_frequencies))
    assert table[0] == {
        "word": keyboard.vocab[first],
        "true_frequency": keyboard.true_frequencies[first],
        "estimated_frequency": estimate.frequencies[first],
    }


def test_precision_counts_words_tied_with_the_tenth():
    # Twelve equally frequent words: any estimated top ten is all true top-ten words.
    words = np.repeat(np.arange(12, dtype=np.int64), 1000)[:, None]
    data = make_keyboard(num_phones=1, vocab_size=12)
    data = dataclasses.replace(
        data, words=words, popularity=np.full(12, 1 / 12), true_frequencies=np.full(12, 1 / 12)
    )
    estimate = estimate_word_frequencies(data, oracle="grr", epsilon=1.0, generator=_generator())
    assert estimate.top10_precision == 1.0


def test_bad_arguments_are_refused_by_name(keyboard):
    with pytest.raises(ConfigError, match=r"oracle must be one of grr, sue, oue, auto"):
        estimate_word_frequencies(keyboard, oracle="olh", epsilon=1.0, generator=_generator())
    with pytest.raises(ConfigError, match=r"epsilon must be in \(0, 100.0\] \(got 0\)"):
        estimate_word_frequencies(keyboard, oracle="grr", epsilon=0, generator=_generator())
    single_word = make_keyboard(num_phones=5, vocab_size=1)
    with pytest.raises(ConfigError, match=r"vocab_size must be >= 2 to estimate .* \(got 1\)"):
        estimate_word_frequencies(single_word, oracle="oue", epsilon=1.0, generator=_generator())
