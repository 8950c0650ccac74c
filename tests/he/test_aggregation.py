import dataclasses

import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.he.aggregation import aggregate, decrypt_sum, encrypt_update, layout_for
from veil.he.context import check_security, load_public_context, public_bytes
from veil.he.schemes import generate


@pytest.fixture(scope="module", params=["bfv", "ckks", "paillier"])
def holder(request):
    return generate(request.param)


def run(holder, x, min_clients=2):
    public = holder.public()
    layout = layout_for(public, len(x), 0.1, 16)
    rng = np.random.default_rng(0)
    updates = [encrypt_update(public, c, row, layout, rng) for c, row in enumerate(x)]
    return (
        public,
        layout,
        updates,
        decrypt_sum(holder, aggregate(public, updates, layout), layout, min_clients),
    )


def test_sum_matches_the_clear_sum(holder):
    x = np.random.default_rng(3).uniform(-0.05, 0.05, (4, 5000))
    public, layout, _, total = run(holder, x)
    step = 1 / layout.scale if layout else 1e-6
    assert np.abs(total - x.sum(0)).max() <= 4 * step  # ≤ one quantization step per client
    assert public.key == holder.key


def test_bfv_expansion_is_about_two():
    holder = generate("bfv")
    x = np.zeros((2, 8192 * 3))
    _, _, updates, _ = run(holder, x)
    size = sum(len(c) for c in updates[0].chunks)
    assert 1.8 < size / (4 * x.shape[1]) < 2.2


def test_public_side_cannot_decrypt(holder):
    public, layout, updates, _ = run(holder, np.zeros((2, 10)))
    with pytest.raises(ProtocolError, match="only the key holder"):
        decrypt_sum(public, aggregate(public, updates, layout), layout, 2)


def test_key_holder_refuses_small_sums(holder):
    public = holder.public()
    layout = layout_for(public, 3, 0.1, 16)
    one = [encrypt_update(public, 0, np.ones(10) * 0.01, layout, np.random.default_rng())]
    with pytest.raises(ProtocolError, match="could be one client's update"):
        decrypt_sum(holder, aggregate(public, one, layout), layout, 2)


def test_bad_updates_are_refused(holder):
    public, layout, updates, _ = run(holder, np.zeros((3, 10)))
    other = generate(holder.name) if holder.name != "paillier" else None
    cases = [
        (dataclasses.replace(updates[1], sender=0), "same client"),
        (dataclasses.replace(updates[1], length=11), "wrong size"),
        (
            dataclasses.replace(updates[1], chunks=(b"x" + updates[1].chunks[0][1:],)),
            "corrupted or tampered",
        ),
    ]
    if other is not None:
        foreign = encrypt_update(other.public(), 1, np.zeros(10), layout, np.random.default_rng())
        cases.append((foreign, "another key"))
    for bad, message in cases:
        with pytest.raises(ProtocolError, match=message):
            aggregate(public, [updates[0], bad, updates[2]], layout)


def test_headroom_is_enforced():
    holder = generate("bfv")
    public = holder.public()
    layout = layout_for(public, 2, 0.1, 16)  # 17-bit lanes: at most 2 summands
    assert layout.max_clients == 2
    ups = [
        encrypt_update(public, c, np.zeros(4), layout, np.random.default_rng()) for c in range(3)
    ]
    with pytest.raises(ProtocolError, match="exceed the packing headroom of 2"):
        aggregate(public, ups, layout)
    with pytest.raises(ConfigError, match="at most 128 ciphertexts"):
        layout_for(public, 200, 0.1, 16)


def test_insecure_or_malformed_parameters_are_refused():
    with pytest.raises(ConfigError, match="exceeds 109, the 128-bit security bound"):
        check_security(4096, [60, 60])
    with pytest.raises(ConfigError, match="one of"):
        check_security(3000, [30])
    with pytest.raises(ConfigError, match="below 128-bit security"):
        generate("paillier", 2048)
    with pytest.raises(ConfigError, match="scheme must be one of"):
        generate("rsa")


def test_contexts_with_secret_keys_or_garbage_are_refused():
    holder = generate("ckks")
    with pytest.raises(ProtocolError, match="must not hold the secret key"):
        load_public_context(holder.context.serialize(save_secret_key=True))
    with pytest.raises(ProtocolError, match="not a TenSEAL context"):
        load_public_context(b"garbage")
    assert not load_public_context(public_bytes(holder.context)).has_secret_key()
