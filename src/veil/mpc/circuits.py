"""Boolean circuits to garble: XOR, AND and NOT gates over numbered wires.

Wires ``0 .. g-1`` are the garbler's inputs, ``g .. g+e-1`` the evaluator's, the rest are gate
outputs in the order the gates were added (a topological order). With free-XOR garbling
(Kolesnikov & Schneider 2008) only AND gates cost anything, so circuits are built to use few.

`msb_of_sum` is the one circuit the comparisons and ReLU need: the sign bit of a + b mod 2^ℓ
for two ℓ-bit inputs (the two additive shares of a value), by a ripple-carry adder whose carry
uses one AND gate per bit (cᵢ₊₁ = cᵢ ⊕ ((aᵢ ⊕ cᵢ) ∧ (bᵢ ⊕ cᵢ)), Boyar, Peralta & Pochuev 2000):
ℓ − 1 AND gates in all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.errors import ConfigError

__all__ = ["Circuit", "CircuitBuilder", "Gate", "evaluate_plain", "msb_of_sum"]

GATE_KINDS = ("xor", "and", "not")


@dataclass(frozen=True)
class Gate:
    """``out = a XOR b``, ``a AND b``, or ``NOT a`` (``b`` is -1 for NOT)."""

    kind: str
    a: int
    b: int
    out: int


@dataclass(frozen=True)
class Circuit:
    """A circuit's input counts, gates (in evaluation order) and output wires."""

    garbler_inputs: int
    evaluator_inputs: int
    gates: tuple[Gate, ...]
    outputs: tuple[int, ...]

    @property
    def num_inputs(self) -> int:
        """Input wires of both parties."""
        return self.garbler_inputs + self.evaluator_inputs

    @property
    def num_wires(self) -> int:
        """Input wires plus one wire per gate."""
        return self.num_inputs + len(self.gates)

    @property
    def and_count(self) -> int:
        """AND gates: each costs two ciphertexts (half-gates)."""
        return sum(gate.kind == "and" for gate in self.gates)


class CircuitBuilder:
    """Adds gates one at a time; each method returns the new gate's output wire."""

    def __init__(self, garbler_inputs: int, evaluator_inputs: int) -> None:
        if garbler_inputs < 0 or evaluator_inputs < 0:
            raise ConfigError("input counts must be >= 0")
        self.garbler_inputs, self.evaluator_inputs = garbler_inputs, evaluator_inputs
        self._gates: list[Gate] = []

    @property
    def garbler_wires(self) -> list[int]:
        """The garbler's input wires."""
        return list(range(self.garbler_inputs))

    @property
    def evaluator_wires(self) -> list[int]:
        """The evaluator's input wires."""
        return list(range(self.garbler_inputs, self.garbler_inputs + self.evaluator_inputs))

    def _add(self, kind: str, a: int, b: int = -1) -> int:
        out = self.garbler_inputs + self.evaluator_inputs + len(self._gates)
        for wire in (a, b) if kind != "not" else (a,):
            if not 0 <= wire < out:
                raise ConfigError(f"gate input wire {wire} does not exist yet (next wire {out})")
        self._gates.append(Gate(kind, a, b, out))
        return out

    def xor(self, a: int, b: int) -> int:
        """``a XOR b`` (free)."""
        return self._add("xor", a, b)

    def and_(self, a: int, b: int) -> int:
        """``a AND b`` (two ciphertexts)."""
        return self._add("and", a, b)

    def not_(self, a: int) -> int:
        """``NOT a`` (free)."""
        return self._add("not", a)

    def build(self, outputs: list[int]) -> Circuit:
        """The circuit with these output wires."""
        return Circuit(
            self.garbler_inputs, self.evaluator_inputs, tuple(self._gates), tuple(outputs)
        )


def msb_of_sum(bits: int = 64) -> Circuit:
    """Sign bit of ``a + b mod 2^bits``; inputs are little-endian bits (garbler: a, evaluator:
    b); ``bits - 1`` AND gates."""
    if bits < 2:
        raise ConfigError(f"msb_of_sum needs at least 2 bits (got {bits})")
    builder = CircuitBuilder(bits, bits)
    a, b = builder.garbler_wires, builder.evaluator_wires
    carry = builder.and_(a[0], b[0])
    for i in range(1, bits - 1):
        carry = builder.xor(carry, builder.and_(builder.xor(a[i], carry), builder.xor(b[i], carry)))
    return builder.build([builder.xor(builder.xor(a[-1], b[-1]), carry)])


def evaluate_plain(
    circuit: Circuit, garbler_bits: np.ndarray, evaluator_bits: np.ndarray
) -> np.ndarray:
    """The circuit on clear bits, ``[N, inputs]`` each: ``[N, outputs]`` booleans (the
    reference the garbled evaluation is tested against)."""
    garbler_bits, evaluator_bits = np.asarray(garbler_bits, bool), np.asarray(evaluator_bits, bool)
    if garbler_bits.shape[1:] != (circuit.garbler_inputs,) or evaluator_bits.shape[1:] != (
        circuit.evaluator_inputs,
    ):
        raise ConfigError(
            f"inputs must be [N, {circuit.garbler_inputs}] and [N, {circuit.evaluator_inputs}]"
        )
    wires = list(garbler_bits.T) + list(evaluator_bits.T)
    for gate in circuit.gates:
        if gate.kind == "xor":
            wires.append(wires[gate.a] ^ wires[gate.b])
        elif gate.kind == "and":
            wires.append(wires[gate.a] & wires[gate.b])
        else:
            wires.append(~wires[gate.a])
    return np.stack([wires[w] for w in circuit.outputs], axis=1)
