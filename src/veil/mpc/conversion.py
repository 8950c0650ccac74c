"""Conversions between arithmetic shares and garbled circuits (the A2Y and Y2A of ABY, Demmler,
Schneider & Zohner 2015).

- **A2Y** (`msb_xor_shares`): parties 0 (garbler) and 1 (evaluator) hold a two-out-of-two
  additive sharing x = a + b mod 2^64 (any scheme provides one:
  `veil.mpc.sharing.ArithmeticProtocol.additive_pair`). The garbler garbles `msb_of_sum` with
  its bits of a as its inputs; the evaluator gets the labels of its bits of b by correlated OT
  (`veil.mpc.ot_extension`, so the OT zero labels are the circuit's and Δ is shared by both).
  Two messages: the evaluator's OT columns, then the garbler's input labels and tables.
  The output label is never decoded: its point-and-permute bit at the evaluator, XOR the zero
  label's at the garbler, is the sign bit. So each holds one XOR share, and learns nothing.
- **Y2A** (`bits_to_arithmetic`): each of the two XOR shares is shared arithmetically by its
  holder, and s₀ ⊕ s₁ = s₀ + s₁ − 2·s₀·s₁ costs one secure product.

The base OTs (128 Naor–Pinkas transfers) run on first use and are kept in ``party.state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from veil.errors import ConfigError
from veil.mpc.circuits import Circuit, msb_of_sum
from veil.mpc.garbling import FixedKeyHash, evaluate, garble, permute_bits
from veil.mpc.ot_extension import CorrelatedOtReceiver, CorrelatedOtSender
from veil.mpc.party import Party
from veil.mpc.ring import RING_BITS, RingGenerator
from veil.mpc.sharing import ArithmeticProtocol
from veil.mpc.tensor import SharedTensor

__all__ = ["EVALUATOR", "GARBLER", "bits_to_arithmetic", "msb_xor_shares"]

GARBLER, EVALUATOR = 0, 1


@dataclass
class _GarblingSession:
    """Per-party state of the garbling between parties 0 and 1."""

    ot: CorrelatedOtSender | CorrelatedOtReceiver
    hash_: FixedKeyHash
    gates_used: int = 0


def _session(party: Party) -> _GarblingSession:
    session = party.state.get("garbling")
    if session is None:
        with party.operation("base_ot"):
            ot = (
                CorrelatedOtSender(party, EVALUATOR)
                if party.index == GARBLER
                else CorrelatedOtReceiver(party, GARBLER)
            )
        session = party.state["garbling"] = _GarblingSession(ot, FixedKeyHash())
    return session


@cache
def _circuit() -> Circuit:
    return msb_of_sum(RING_BITS)


def _bits(values: np.ndarray) -> np.ndarray:
    """``[64, N]`` uint8: bit i of each value (little-endian)."""
    shifts = np.arange(RING_BITS, dtype=np.uint64)[:, None]
    return ((values[None, :] >> shifts) & np.uint64(1)).astype(np.uint8)


def msb_xor_shares(party: Party, share: np.ndarray | None) -> np.ndarray | None:
    """This party's XOR share (uint8, one per element) of the sign bit of x, from its share of a
    two-out-of-two additive sharing of x between parties 0 and 1; ``None`` at other parties."""
    if party.index not in (GARBLER, EVALUATOR):
        return None
    if share is None:
        raise ConfigError(f"party {party.index} needs its additive share to compare")
    values = np.asarray(share, np.uint64).ravel()
    count, circuit, session = values.size, _circuit(), _session(party)
    first_gate = session.gates_used
    session.gates_used += circuit.and_count
    payload = (RING_BITS + 2 * circuit.and_count, count, 2)
    with party.operation("garbled_circuit"):
        if party.index == GARBLER:
            evaluator_zero = session.ot.extend(RING_BITS * count).reshape(RING_BITS, count, 2)
            garbler_zero = RingGenerator().ring((RING_BITS, count, 2))
            delta = session.ot.delta
            chosen = garbler_zero ^ (_bits(values)[..., None].astype(np.uint64) * delta)
            zero = np.concatenate([garbler_zero, evaluator_zero])
            tables, outputs = garble(circuit, delta, zero, first_gate, session.hash_)
            party.send(EVALUATOR, np.concatenate([chosen, tables.reshape(-1, count, 2)]))
        else:
            own = session.ot.extend(_bits(values).ravel()).reshape(RING_BITS, count, 2)
            message = party.receive(GARBLER, payload)
            tables = message[RING_BITS:].reshape(circuit.and_count, 2, count, 2)
            labels = np.concatenate([message[:RING_BITS], own])
            outputs = evaluate(circuit, labels, tables, first_gate, session.hash_)
    return permute_bits(outputs[0]).reshape(np.shape(share))


def bits_to_arithmetic(
    protocol: ArithmeticProtocol, xor_share: np.ndarray | None, shape: tuple[int, ...]
) -> SharedTensor:
    """An integer `SharedTensor` of s₀ ⊕ s₁, from the XOR shares at parties 0 and 1."""
    mine = None if xor_share is None else np.asarray(xor_share, np.int64)
    shares = protocol.share_each({GARBLER: shape, EVALUATOR: shape}, mine, integer=True)
    first, second = shares[GARBLER], shares[EVALUATOR]
    return first + second - (first * second) * 2
