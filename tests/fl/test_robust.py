import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil.errors import ConfigError
from veil.fl.aggregators import weighted_mean
from veil.fl.links import ClientUpdates, chain
from veil.fl.robust import (
    ROBUST_AGGREGATORS,
    SECURE_SUM_COMPATIBLE,
    build_robust_aggregator,
    check_robust_setting,
    check_secure_combination,
    coordinate_median,
    krum,
    krum_scores,
    median_of_updates,
    multi_krum,
    multi_krum_select,
    norm_bounding,
    norm_bounding_for_secure_sum,
    trimmed_count,
    trimmed_mean,
    trimmed_mean_of_updates,
)

EXAMPLE_PARAMS = {
    "krum": {"num_byzantine": 2},
    "multi_krum": {"num_byzantine": 2, "num_selected": 3},
    "trimmed_mean": {"trim_fraction": 0.34},
    "norm_bounding": {"max_norm": 1.0},
}
LINE = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])  # three close points, two outliers


def updates_of(matrix, weights=None) -> ClientUpdates:
    """Rows of ``matrix`` as client updates of a two-leaf model (first column, then the rest)."""
    matrix = torch.as_tensor(matrix, dtype=torch.float32)
    n = matrix.shape[0]
    weights = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    deltas = {"a": matrix[:, :1].reshape(n, 1, 1), "b": matrix[:, 1:]}
    return ClientUpdates(deltas, weights, torch.arange(n))


def aggregate(link, matrix, weights=None, key=None) -> torch.Tensor:
    out, _, events = link.apply(updates_of(matrix, weights), link.init({}), key)
    assert events == []
    return torch.cat([out["a"].reshape(-1), out["b"]])


def reference_krum_scores(matrix: np.ndarray, f: int) -> list[float]:
    """Blanchard et al.'s score, by loops: squared distances to the n − f − 2 closest others."""
    n = len(matrix)
    scores = []
    for i in range(n):
        others = sorted(float(((matrix[i] - matrix[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(others[: n - f - 2]))
    return scores


def test_krum_scores_by_hand():
    # f = 1, n = 5: each score sums the 2 smallest squared distances.
    assert krum_scores(LINE, 1).tolist() == [5.0, 2.0, 5.0, 65.0, 82.0]


def test_krum_scores_match_a_reference_on_random_rows():
    matrix = np.random.default_rng(0).normal(size=(9, 4))
    scores = krum_scores(torch.as_tensor(matrix), 2)
    assert np.allclose(scores.numpy(), reference_krum_scores(matrix, 2))


def test_multi_krum_selects_the_lowest_scores_ties_by_index():
    assert multi_krum_select(LINE, 1, 3).tolist() == [1, 0, 2]
    assert multi_krum_select(LINE, 1, 1).tolist() == [1]


def test_krum_link_returns_the_chosen_update_whatever_the_weights():
    matrix = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [10.0, 0.0], [11.0, 5.0]])
    out = aggregate(krum(1), matrix, weights=[1, 1, 1, 100, 100])
    assert out.tolist() == [1.0, 1.0]


def test_multi_krum_link_averages_the_selected_updates():
    assert aggregate(multi_krum(1, 3), LINE).tolist() == [1.0]
    assert aggregate(multi_krum(1, 4), LINE).tolist() == [3.25]  # rows 1, 0, 2, 3


def test_krum_refuses_too_few_clients_at_apply_time():
    with pytest.raises(ConfigError, match=r"krum with num_byzantine=2 needs more than 2f \+ 2 = 6"):
        krum_scores(torch.zeros(6, 3), 2)
    with pytest.raises(ConfigError, match="needs more than 2f"):
        aggregate(krum(2), torch.zeros(6, 3))


def test_multi_krum_refuses_more_selected_than_trusted():
    with pytest.raises(ConfigError, match=r"num_selected <= clients - num_byzantine = 4"):
        multi_krum_select(LINE, 1, 5)
    with pytest.raises(ConfigError, match="num_selected must be >= 1"):
        multi_krum(1, 0)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_krum_refuses_a_bad_byzantine_count(bad):
    with pytest.raises(ConfigError, match="num_byzantine must be an integer >= 0"):
        krum(bad)


def test_median_by_hand_odd_and_even():
    assert median_of_updates(torch.tensor([[1.0, 5.0], [3.0, 2.0], [2.0, 9.0]])).tolist() == [
        2.0,
        5.0,
    ]
    assert median_of_updates(torch.tensor([[1.0], [2.0], [4.0], [10.0]])).tolist() == [3.0]
    assert aggregate(coordinate_median(), LINE).tolist() == [2.0]


def test_trimmed_mean_by_hand():
    column = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert trimmed_mean_of_updates(column, 0.2).tolist() == [3.0]  # drops 1 and 100
    assert trimmed_mean_of_updates(column, 0.0).tolist() == [22.0]  # the plain mean
    assert trimmed_mean_of_updates(column, 0.39).tolist() == [3.0]  # ⌊1.95⌋ = 1 from each end
    assert aggregate(trimmed_mean(0.4), column).tolist() == [3.0]  # ⌊2⌋ = 2: the median


def test_trimmed_count_rounds_down_despite_float_error():
    assert trimmed_count(0.29, 100) == 29 and trimmed_count(0.1, 30) == 3
    assert trimmed_count(0.19, 5) == 0


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7])
def test_trimmed_mean_refuses_a_bad_fraction(beta):
    with pytest.raises(ConfigError, match=r"trim_fraction must be in \[0, 0.5\)"):
        trimmed_mean(beta)


def test_norm_bounding_clips_then_averages_ignoring_weights():
    matrix = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    out = aggregate(norm_bounding(1.0), matrix, weights=[1, 100])
    assert torch.allclose(out, torch.tensor([0.45, 0.6]))


def test_norm_bounding_noise_has_the_asked_std_and_comes_from_the_key():
    zeros = torch.zeros(4, 20_000)
    link = norm_bounding(1.0, noise_std=2.0)
    first = aggregate(link, zeros, key=torch.Generator().manual_seed(1))
    again = aggregate(link, zeros, key=torch.Generator().manual_seed(1))
    other = aggregate(link, zeros, key=torch.Generator().manual_seed(2))
    assert 1.9 < float(first.std()) < 2.1 and abs(float(first.mean())) < 0.05
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("name", list(ROBUST_AGGREGATORS))
def test_a_nan_or_infinite_update_does_not_poison_the_aggregate(name):
    nan, inf = float("nan"), float("inf")
    matrix = [[0.0, 0.0], [0.1, 0.1], [0.2, 0.2], [0.1, 0.0], [0.2, 0.1], [nan, 1.0], [inf, -inf]]
    link = build_robust_aggregator(name, **EXAMPLE_PARAMS.get(name, {}))
    out = aggregate(link, matrix)
    assert torch.isfinite(out).all() and (out.abs() <= 0.2).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_norm": 0.0}, "max_norm must be a number > 0"),
        ({"max_norm": float("inf")}, "max_norm must be a number > 0"),
        ({"max_norm": 1.0, "noise_std": -1.0}, "noise_std must be a number >= 0"),
    ],
)
def test_norm_bounding_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        norm_bounding(**kwargs)


def test_norm_bounding_split_around_a_sum_equals_the_link():
    clip, noise = norm_bounding_for_secure_sum(1.0)
    matrix = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    split = chain(clip, weighted_mean(), noise)  # equal weights: the secure sum's plain mean
    assert torch.allclose(aggregate(split, matrix), aggregate(norm_bounding(1.0), matrix))


@pytest.mark.parametrize("name", list(ROBUST_AGGREGATORS))
def test_every_aggregator_gives_zero_on_an_empty_round(name):
    link = build_robust_aggregator(name, **EXAMPLE_PARAMS.get(name, {}))
    assert aggregate(link, torch.zeros(0, 3)).tolist() == [0.0, 0.0, 0.0]


def test_build_robust_aggregator_builds_by_name():
    out = aggregate(build_robust_aggregator("krum", num_byzantine=1), LINE)
    assert out.tolist() == [1.0]
    assert aggregate(build_robust_aggregator("median"), LINE).tolist() == [2.0]


def test_build_robust_aggregator_refuses_unknown_names_and_parameters():
    with pytest.raises(ConfigError, match=r"must be one of \['krum', 'multi_krum', 'median'"):
        build_robust_aggregator("bulyan")
    with pytest.raises(ConfigError, match=r"takes \['num_byzantine'\] \(got unknown \['f'\]"):
        build_robust_aggregator("krum", f=1)
    with pytest.raises(ConfigError, match=r"missing \['max_norm'\]"):
        build_robust_aggregator("norm_bounding")


def test_check_robust_setting_knows_each_rules_client_count():
    check_robust_setting("krum", {"num_byzantine": 2}, 7)
    check_robust_setting("multi_krum", {"num_byzantine": 2, "num_selected": 5}, 7)
    check_robust_setting("trimmed_mean", {"trim_fraction": 0.1}, 10)
    check_robust_setting("median", {}, 1)
    with pytest.raises(ConfigError, match=r"more than 2f \+ 2 = 6 clients per round \(got 6\)"):
        check_robust_setting("krum", {"num_byzantine": 2}, 6)
    with pytest.raises(ConfigError, match="num_selected must be <= clients per round"):
        check_robust_setting("multi_krum", {"num_byzantine": 2, "num_selected": 6}, 7)
    with pytest.raises(ConfigError, match=r"trims ⌊0.1 · 9⌋ = 0 .* at least 1/9"):
        check_robust_setting("trimmed_mean", {"trim_fraction": 0.1}, 9)
    with pytest.raises(ConfigError, match="clients_per_round must be >= 1"):
        check_robust_setting("median", {}, 0)
    with pytest.raises(ConfigError, match="robust aggregator must be one of"):
        check_robust_setting("mean", {}, 5)


def test_only_norm_bounding_composes_with_a_secure_sum():
    assert {"norm_bounding"} == SECURE_SUM_COMPATIBLE
    for name, protection in itertools.product(ROBUST_AGGREGATORS, ("none", "secagg", "he")):
        if protection == "none" or name == "norm_bounding":
            check_secure_combination(name, protection)
            continue
        with pytest.raises(ConfigError, match=f"{name} needs each client's update in the clear"):
            check_secure_combination(name, protection)
    with pytest.raises(ConfigError, match=r"cannot run on a SecAgg\+ masked sum.*norm_bounding"):
        check_secure_combination("krum", "secagg")
    with pytest.raises(ConfigError, match=r"cannot run on an encrypted \(HE\) sum"):
        check_secure_combination("median", "he")
    with pytest.raises(ConfigError, match=r"protection must be one of \('none', 'secagg', 'he'\)"):
        check_secure_combination("krum", "tee")


# --- robustness: a minority of arbitrary updates cannot pull the aggregate out of the honest range


ROWS = st.tuples(st.integers(3, 8), st.just(3))


@settings(max_examples=60, deadline=None)
@given(
    honest=arrays(np.float32, ROWS, elements=st.floats(-10, 10, width=32)),
    byzantine=arrays(
        np.float32,
        st.tuples(st.integers(1, 2), st.just(3)),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
)
def test_median_and_trimmed_mean_stay_within_the_honest_range(honest, byzantine):
    matrix = torch.as_tensor(np.concatenate([honest, byzantine]))
    low, high = honest.min(0) - 1e-3, honest.max(0) + 1e-3
    f, n = len(byzantine), len(matrix)
    for out in (median_of_updates(matrix), trimmed_mean_of_updates(matrix, f / n)):
        assert np.all((low <= out.numpy()) & (out.numpy() <= high))


@settings(max_examples=60, deadline=None)
@given(
    honest=arrays(np.float32, (7, 3), elements=st.floats(-1, 1, width=32)),
    shift=st.floats(100, 1e4),
    f=st.integers(1, 2),
)
def test_krum_picks_an_honest_update_when_attackers_are_far(honest, shift, f):
    byzantine = honest[:f] + np.float32(shift)
    matrix = torch.as_tensor(np.concatenate([honest, byzantine]))
    assert int(multi_krum_select(matrix, f, 1)[0]) < len(honest)
