import pytest

from veil.errors import ProtocolError
from veil.tee.errors import RollbackDetected, SealedStateRefused
from veil.tee.sealing import SealedStore, seal, sealing_key, unseal

SECRET = bytes(range(32))
KEY = sealing_key(SECRET, b"\x01" * 32)


def test_sealed_state_opens_with_its_round():
    assert unseal(KEY, seal(KEY, 7, b"state")) == (7, b"state")


def test_key_is_bound_to_the_measurement_and_the_secret():
    assert sealing_key(SECRET, b"\x02" * 32) != KEY
    assert sealing_key(bytes(32), b"\x01" * 32) != KEY
    other = sealing_key(SECRET, b"\x02" * 32)  # another enclave on the same CPU
    with pytest.raises(SealedStateRefused, match="another measurement"):
        unseal(other, seal(KEY, 1, b"state"))


@pytest.mark.parametrize("position", [8, 15, 20, -1])
def test_any_altered_byte_is_refused(position):
    blob = bytearray(seal(KEY, 3, b"state"))
    blob[position] ^= 1  # the round counter, the nonce or the ciphertext
    with pytest.raises(SealedStateRefused, match="altered"):
        unseal(KEY, bytes(blob))


def test_foreign_blob_is_refused():
    with pytest.raises(SealedStateRefused, match="bad header"):
        unseal(KEY, b"garbage" * 10)


def test_store_refuses_an_older_blob_than_it_has_seen():
    store = SealedStore(KEY)
    first, second = store.seal(1, b"a"), store.seal(2, b"b")
    assert store.unseal(second) == (2, b"b")
    with pytest.raises(RollbackDetected, match="round 1, older than round 2"):
        store.unseal(first)
    with pytest.raises(ProtocolError, match="must exceed the last sealed one"):
        store.seal(2, b"again")


def test_a_restarted_store_accepts_any_authentic_blob():
    old = SealedStore(KEY).seal(1, b"a")
    assert SealedStore(KEY).unseal(old) == (1, b"a")  # why clients track round counters too
