from collections import Counter

import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.mpc.beaver import OnDemandDealer, TrustedDealer, plan_bytes, product, result_shape


def test_dealt_triples_open_to_a_product_and_each_party_gets_its_own():
    plan = Counter({("matmul", (3, 2), (2, 4)): 2, ("mul", (5,), (5,)): 1})
    first, second = TrustedDealer().deal(plan)
    for signature, count in plan.items():
        for _ in range(count):
            (a0, b0, c0), (a1, b1, c1) = first.take(*signature), second.take(*signature)
            assert np.array_equal(c0 + c1, product(signature[0], a0 + a1, b0 + b1))
            assert not np.array_equal(a0, a1)
    assert first.remaining() == 0
    with pytest.raises(ProtocolError, match=r"out of triples for mul \(5,\) × \(5,\): the offline"):
        first.take("mul", (5,), (5,))


def test_plan_bytes_counts_a_b_and_c_of_every_triple():
    plan = Counter({("matmul", (3, 2), (2, 4)): 2})
    assert plan_bytes(plan) == 8 * (6 + 8 + 12) * 2


def test_on_demand_views_see_the_same_triples_and_record_the_plan():
    dealer = OnDemandDealer()
    first, second = dealer.view(0), dealer.view(1)
    a0, b0, c0 = first.take("mul", (2,), (2,))
    a1, b1, c1 = second.take("mul", (2,), (2,))
    assert np.array_equal(c0 + c1, (a0 + a1) * (b0 + b1))
    assert dealer.used == Counter({("mul", (2,), (2,)): 1})


def test_unknown_kinds_and_misfitting_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="kind is 'mul' or 'matmul'"):
        product("div", np.ones(1, np.uint64), np.ones(1, np.uint64))
    with pytest.raises(ConfigError, match=r"shapes \(2, 3\) and \(2, 3\) do not fit for matmul"):
        result_shape("matmul", (2, 3), (2, 3))
