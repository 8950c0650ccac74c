from collections import Counter

import numpy as np
import pytest

from veil.errors import ConfigError
from veil.mpc import run_parties
from veil.mpc.beaver import product
from veil.mpc.paillier_triples import _to_array, generate_paillier_triples
from veil.mpc.runner import PartiesFailed

PLAN = Counter({("matmul", (3, 2), (2, 1)): 2, ("mul", (4,), (4,)): 1})


def test_dealer_free_triples_open_to_products_and_report_their_cost():
    def program(party):
        return generate_paillier_triples(party, PLAN, key_bits=1024)

    (first, cost), (second, _) = (r.value for r in run_parties(program, [(), ()]))
    for signature, count in PLAN.items():
        for _ in range(count):
            (a0, b0, c0), (a1, b1, c1) = first.take(*signature), second.take(*signature)
            assert np.array_equal(c0 + c1, product(signature[0], a0 + a1, b0 + b1))
    assert cost.triples == 3 and cost.key_bits == 1024
    assert cost.encryptions == (2 + 2 + 4) + (3 + 3 + 4) and cost.decryptions == 3 + 3 + 4
    assert cost.bytes_sent > cost.encryptions * 256 and cost.seconds > 0


def test_small_keys_and_other_party_counts_are_refused():
    with pytest.raises(ConfigError, match="key_bits must be >= 1024"):
        run_parties(lambda party: generate_paillier_triples(party, PLAN, 512), [(), ()])
    with pytest.raises(ConfigError, match="Paillier triples are for 2 parties"):
        run_parties(lambda party: generate_paillier_triples(party, PLAN, 1024), [(), (), ()])


def test_a_peer_s_small_key_is_a_protocol_error():
    def program(party):
        if party.index == 0:
            return generate_paillier_triples(party, PLAN, 1024)
        small = _to_array([(1 << 511) + 1], 128)  # a 512-bit modulus in a 1024-bit slot
        return party.exchange({0: small}, {0: ((1, 128), np.uint8)})

    with pytest.raises(PartiesFailed, match="party 1 sent a Paillier key below 1024 bits"):
        run_parties(program, [(), ()])
