"""Yao garbled circuits with free-XOR, point-and-permute and half-gates, over many inputs at once.

- **Labels**: each wire has a 128-bit zero label W⁰ and one label W¹ = W⁰ ⊕ Δ for one global
  secret Δ whose lowest bit is 1 (free-XOR, Kolesnikov & Schneider 2008). The lowest bit of
  a label is its point-and-permute bit (Beaver, Micali & Rogaway 1990): the evaluator uses it
  to pick table rows, and it reveals nothing because W⁰'s own bit is random.
- **Gates**: XOR and NOT cost nothing; AND is a half-gates pair (Zahur, Rosulek & Evans 2015,
  "Two halves make a whole"): two 128-bit ciphertexts T_G, T_E per gate, the garbler hashing
  four labels and the evaluator two.
- **Hash**: fixed-key AES (from ``cryptography``) as a tweakable circular correlation-robust
  function, H(x, i) = π(σ(x) ⊕ i) ⊕ σ(x) with σ(x_L‖x_R) = (x_L ⊕ x_R)‖x_L (Guo, Katz, Wang &
  Yu 2020, "Efficient and secure multiparty computation from fixed-key block ciphers").
  The tweak i = (gate number, input number) is never reused within a session.

Everything is vectorised over N independent evaluations of one circuit (a batch of
comparisons): a label array is ``[N, 2]`` uint64, one AES call hashes a whole gate's labels.
Semi-honest security: the evaluator learns only the output labels, which are random unless
decoded (`veil.mpc.conversion` keeps them as XOR shares instead).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veil.errors import ConfigError, ProtocolError
from veil.mpc.circuits import Circuit

__all__ = ["FixedKeyHash", "evaluate", "garble", "permute_bits"]

FIXED_KEY = hashlib.sha256(b"veil half-gates fixed AES key").digest()[:16]  # public, by design


def permute_bits(labels: np.ndarray) -> np.ndarray:
    """The point-and-permute bit (lowest bit) of each label, as uint8."""
    return (labels[..., 0] & np.uint64(1)).astype(np.uint8)


def _permute_mask(labels: np.ndarray) -> np.ndarray:
    """``[N, 1]`` words of all ones where a label's point-and-permute bit is 1, else zero: ANDed
    with a label it selects (a cheaper ``where``)."""
    return (np.uint64(0) - (labels[:, 0] & np.uint64(1)))[:, None]


class FixedKeyHash:
    """H(x, i) = AES_k(σ(x) ⊕ i) ⊕ σ(x) for a public fixed key k (see the module docstring)."""

    def __init__(self) -> None:
        self._aes = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()

    def __call__(self, labels: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
        """Hash ``[..., N, 2]`` labels; ``tweaks[...]`` is the high tweak word of each block of
        N (the low word is the input number 0..N-1)."""
        count = labels.shape[-2]
        block = np.empty(labels.shape, np.uint64)  # σ(x) ⊕ (tweak, input number)
        np.bitwise_xor(labels[..., 0], labels[..., 1], out=block[..., 0])
        block[..., 0] ^= np.asarray(tweaks, np.uint64)[..., None]
        np.bitwise_xor(labels[..., 0], np.arange(count, dtype=np.uint64), out=block[..., 1])
        encrypted = np.frombuffer(self._aes.update(block.tobytes()), np.uint64)
        return encrypted.reshape(block.shape) ^ block


def garble(
    circuit: Circuit, delta: np.ndarray, input_labels: np.ndarray, first_gate: int, hash_=None
) -> tuple[np.ndarray, np.ndarray]:
    """Garble ``circuit`` for N inputs at once.

    ``input_labels`` are the zero labels of the input wires, ``[inputs, N, 2]``; ``delta`` is
    Δ (``[2]`` uint64, lowest bit 1); AND gates are numbered from ``first_gate`` (the tweaks).
    Returns the tables ``[AND gates, 2, N, 2]`` (T_G, T_E) and the output wires' zero labels
    ``[outputs, N, 2]``.
    """
    delta = np.asarray(delta, np.uint64)
    if delta.shape != (2,) or not delta[0] & np.uint64(1):
        raise ConfigError("Δ must be two uint64 words with its lowest bit set")
    _check_inputs(circuit, input_labels)
    hash_ = hash_ or FixedKeyHash()
    wires: list[np.ndarray | None] = [*input_labels, *([None] * len(circuit.gates))]
    tables = np.empty((circuit.and_count, 2, *input_labels.shape[1:]), np.uint64)
    hashed = np.empty((4, *input_labels.shape[1:]), np.uint64)  # a, a ⊕ Δ, b, b ⊕ Δ
    number = first_gate
    for gate in circuit.gates:
        a = wires[gate.a]
        if gate.kind == "xor":
            wires[gate.out] = a ^ wires[gate.b]
        elif gate.kind == "not":
            wires[gate.out] = a ^ delta
        else:
            b = wires[gate.b]
            hashed[0], hashed[2] = a, b
            np.bitwise_xor(a, delta, out=hashed[1])
            np.bitwise_xor(b, delta, out=hashed[3])
            tweaks = np.array([2 * number, 2 * number, 2 * number + 1, 2 * number + 1])
            ha0, ha1, hb0, hb1 = hash_(hashed, tweaks)
            select_a, select_b = _permute_mask(a), _permute_mask(b)
            t_g, t_e = tables[number - first_gate]
            np.bitwise_xor(ha0 ^ ha1, delta & select_b, out=t_g)
            np.bitwise_xor(hb0 ^ hb1, a, out=t_e)
            wires[gate.out] = ha0 ^ (t_g & select_a) ^ hb0 ^ ((t_e ^ a) & select_b)
            number += 1
    return tables, np.stack([wires[w] for w in circuit.outputs])


def evaluate(
    circuit: Circuit, input_labels: np.ndarray, tables: np.ndarray, first_gate: int, hash_=None
) -> np.ndarray:
    """Evaluate a garbled ``circuit`` on one label per input wire (``[inputs, N, 2]``) with the
    garbler's ``tables``; returns the output labels ``[outputs, N, 2]``."""
    _check_inputs(circuit, input_labels)
    if tables.shape != (circuit.and_count, 2, *input_labels.shape[1:]):
        raise ProtocolError(
            f"garbled tables of shape {tables.shape} do not fit a circuit of "
            f"{circuit.and_count} AND gates on {input_labels.shape[1]} inputs"
        )
    hash_ = hash_ or FixedKeyHash()
    wires: list[np.ndarray | None] = [*input_labels, *([None] * len(circuit.gates))]
    number = first_gate
    for gate in circuit.gates:
        a = wires[gate.a]
        if gate.kind == "xor":
            wires[gate.out] = a ^ wires[gate.b]
        elif gate.kind == "not":
            wires[gate.out] = a  # the garbler flipped the meaning of the labels instead
        else:
            b = wires[gate.b]
            t_g, t_e = tables[number - first_gate]
            ha, hb = hash_(np.stack([a, b]), np.array([2 * number, 2 * number + 1]))
            wires[gate.out] = ha ^ (t_g & _permute_mask(a)) ^ hb ^ ((t_e ^ a) & _permute_mask(b))
            number += 1
    return np.stack([wires[w] for w in circuit.outputs])


def _check_inputs(circuit: Circuit, labels: np.ndarray) -> None:
    if labels.ndim != 3 or labels.shape[0] != circuit.num_inputs or labels.shape[2] != 2:
        raise ConfigError(
            f"input labels must be [{circuit.num_inputs}, N, 2] uint64 (got {labels.shape})"
        )
