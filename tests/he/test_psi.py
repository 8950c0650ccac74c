"""ECDH-PSI over X25519: correct intersections, blinded values that hide the ids, clear errors."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError, ProtocolError
from veil.he.psi import (
    BLINDED_BYTES,
    BlindedIds,
    DoublyBlindedIds,
    EcdhPsiParty,
    hash_to_point,
    run_psi,
)


def random_sets(rng: random.Random, shared: int, only_a: int, only_b: int):
    ids = [f"cust-{rng.getrandbits(48):012x}" for _ in range(shared + only_a + only_b)]
    assert len(set(ids)) == len(ids)
    a = ids[:shared] + ids[shared : shared + only_a]
    b = ids[:shared] + ids[shared + only_a :]
    rng.shuffle(a)
    rng.shuffle(b)
    return a, b, sorted(ids[:shared])


def test_intersection_of_partly_overlapping_random_sets():
    a, b, shared = random_sets(random.Random(0), shared=120, only_a=40, only_b=70)
    result = run_psi(a, b)
    assert result.intersection == tuple(shared)
    assert result.sizes == (160, 190)
    assert result.seconds > 0
    assert result.bytes_exchanged == BLINDED_BYTES * 2 * (160 + 190)


@settings(max_examples=25, deadline=None)
@given(
    a=st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=25),
    b=st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=25),
)
def test_intersection_matches_set_intersection(a, b):
    assert run_psi(sorted(a), sorted(b)).intersection == tuple(sorted(a & b))


def test_disjoint_sets_give_an_empty_intersection():
    assert run_psi(["a", "b"], ["c"]).intersection == ()


def test_blinded_values_are_not_the_hashes_and_differ_between_runs_and_parties():
    ids = [f"id{i}" for i in range(30)]
    hashes = {hash_to_point(i) for i in ids} | {hashlib.sha256(i.encode()).digest() for i in ids}
    first = set(EcdhPsiParty("a", ids).blinded_ids().values)
    second = set(EcdhPsiParty("a", ids).blinded_ids().values)
    assert not first & hashes
    assert not first & second  # fresh key per party object
    assert all(len(v) == BLINDED_BYTES for v in first)


def test_blinded_ids_are_sent_shuffled():
    ids = [f"id{i:03d}" for i in range(64)]
    party = EcdhPsiParty("a", ids)
    sent = party.blinded_ids()
    assert party._sent != tuple(range(64))
    assert sent.sender == "a" and len(sent.values) == 64


def test_reblinding_commutes():
    x, y = EcdhPsiParty("x", ["same"]), EcdhPsiParty("y", ["same"])
    assert x.reblind(y.blinded_ids()).values == y.reblind(x.blinded_ids()).values


def test_hash_to_point_is_domain_separated():
    assert hash_to_point("42") != hashlib.sha256(b"42").digest()
    assert len(hash_to_point("42")) == 32 and hash_to_point("42") == hash_to_point("42")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], r"bank: PSI needs at least one id \(got an empty set\)"),
        (["a", "b", "a"], r"bank: ids must be distinct \('a' appears 2 times\)"),
        (["a", 7], r"bank: ids must be strings \(got int 7\)"),
    ],
)
def test_bad_id_sets(ids, message):
    with pytest.raises(ConfigError, match=message):
        EcdhPsiParty("bank", ids)


def test_bad_id_sets_in_run_psi():
    with pytest.raises(ConfigError, match="host: PSI needs at least one id"):
        run_psi(["a"], [])


def test_wrong_length_blinded_value():
    party = EcdhPsiParty("bank", ["a"])
    bad = BlindedIds("partner", (b"\x01" * 31,))
    with pytest.raises(ProtocolError, match=r"blinded ids from partner: .* 32 bytes \(got 31\)"):
        party.reblind(bad)


def test_non_bytes_blinded_value():
    with pytest.raises(ProtocolError, match=r"must be 32 bytes \(got str\)"):
        EcdhPsiParty("bank", ["a"]).reblind(BlindedIds("partner", ("x" * 32,)))


def test_low_order_point_is_rejected():
    with pytest.raises(ProtocolError, match="not a valid X25519 point"):
        EcdhPsiParty("bank", ["a"]).reblind(BlindedIds("partner", (bytes(32),)))


def test_repeated_blinded_values_are_rejected():
    value = EcdhPsiParty("p", ["a"]).blinded_ids().values[0]
    with pytest.raises(ProtocolError, match="values repeat"):
        EcdhPsiParty("bank", ["a"]).reblind(BlindedIds("partner", (value, value)))


def test_reply_of_the_wrong_length():
    bank, partner = EcdhPsiParty("bank", ["a", "b"]), EcdhPsiParty("partner", ["b"])
    sent = bank.blinded_ids()
    theirs = partner.blinded_ids()
    short = DoublyBlindedIds("partner", partner.reblind(sent).values[:1])
    with pytest.raises(ProtocolError, match="the reply from partner has 1 values, but 2 were sent"):
        bank.intersection(theirs, short)


def test_intersection_before_sending():
    bank, partner = EcdhPsiParty("bank", ["a"]), EcdhPsiParty("partner", ["a"])
    theirs = partner.blinded_ids()
    with pytest.raises(ProtocolError, match=r"call blinded_ids\(\) before intersection\(\)"):
        bank.intersection(theirs, DoublyBlindedIds("partner", ()))
