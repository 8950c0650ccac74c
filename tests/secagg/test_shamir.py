import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError, ProtocolError
from veil.secagg import shamir


def test_prime_is_the_smallest_prime_above_2_to_256():
    assert gmpy2.is_prime(shamir.PRIME)
    assert not any(gmpy2.is_prime(n) for n in range(2**256, shamir.PRIME))


def test_known_answer_polynomial():
    # f(x) = 7 + 3x (threshold 2): holders 1, 2 get 10, 13; Lagrange at 0 gives 7 back.
    shares = [shamir.Share(1, 10), shamir.Share(2, 13)]
    assert shamir.combine(shares, 2) == (7).to_bytes(32, "big")


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(1, 12), data=st.data())
def test_any_threshold_subset_recovers_the_secret(secret, n, data):
    t = data.draw(st.integers(1, n))
    holders = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, holders)
    subset = data.draw(st.permutations(shares))[:t]
    assert shamir.combine(subset, t) == secret


def test_fewer_than_threshold_shares_are_refused():
    shares = shamir.split(b"k" * 32, 3, [1, 2, 3, 4])
    with pytest.raises(ProtocolError, match="2 shares cannot recover a 3-of-n"):
        shamir.combine(shares[:2], 3)


def test_t_minus_one_shares_are_consistent_with_every_secret():
    # Perfect secrecy: for any candidate secret there is a polynomial through the t-1 shares.
    shares = shamir.split(b"\x01" * 32, 2, [5, 9])
    for candidate in (0, 1, 2**255):
        completed = [shares[0], shamir.Share(1000, 0)]
        slope = (shares[0].y - candidate) * pow(shares[0].x, -1, shamir.PRIME) % shamir.PRIME
        completed[1] = shamir.Share(1000, (candidate + slope * 1000) % shamir.PRIME)
        assert int.from_bytes(shamir.combine(completed, 2), "big") == candidate


def test_bytes_round_trip_and_bad_shares():
    share = shamir.split(b"s" * 32, 2, [1, 2])[0]
    assert shamir.share_from_bytes(1, share.to_bytes()) == share
    with pytest.raises(ProtocolError, match="33 bytes"):
        shamir.share_from_bytes(1, b"short")
    with pytest.raises(ProtocolError, match="not a field element"):
        shamir.share_from_bytes(1, (shamir.PRIME).to_bytes(33, "big"))
    with pytest.raises(ProtocolError, match="same holder"):
        shamir.combine([share, share], 2)


@pytest.mark.parametrize(
    ("secret", "t", "holders", "message"),
    [
        (b"x" * 33, 1, [1], "at most 32 bytes"),
        (b"x", 0, [1], "threshold must be in"),
        (b"x", 3, [1, 2], "threshold must be in"),
        (b"x", 1, [1, 1], "distinct"),
        (b"x", 1, [0], "distinct"),
    ],
)
def test_bad_arguments(secret, t, holders, message):
    with pytest.raises(ConfigError, match=message):
        shamir.split(secret, t, holders)
