"""TenSEAL (Microsoft SEAL) contexts: 128-bit secure parameters, key ids, checked loading.

Security: for ring dimension N, the total coefficient modulus log2(Q) must stay below the
HomomorphicEncryption.org standard's bound for 128-bit classical security with a ternary secret
(Albrecht et al. 2018, Table 1): N = 1024 → 27 bits, 2048 → 54, 4096 → 109, 8192 → 218,
16384 → 438, 32768 → 881. SEAL refuses larger moduli too, but with a vague message; we refuse
first and say why.

Key ids: a ciphertext made under another key deserializes without complaint and decrypts to
garbage, so every ciphertext veil sends travels with the SHA-256 id of the public context it was
made under, and is refused under any other (`check_key_id`).
"""

from __future__ import annotations

import hashlib

import tenseal as ts

from veil.errors import ConfigError, ProtocolError

MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def check_security(poly_modulus_degree: int, coeff_mod_bit_sizes: list[int]) -> None:
    """Refuse parameters below 128-bit security (or malformed), saying which bound failed."""
    if poly_modulus_degree not in MAX_LOG_Q_128:
        raise ConfigError(
            f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)} "
            f"(got {poly_modulus_degree})"
        )
    if not coeff_mod_bit_sizes or any(not 17 <= b <= 60 for b in coeff_mod_bit_sizes):
        raise ConfigError(f"coefficient primes must have 17..60 bits (got {coeff_mod_bit_sizes})")
    total, bound = sum(coeff_mod_bit_sizes), MAX_LOG_Q_128[poly_modulus_degree]
    if total > bound:
        raise ConfigError(
            f"log2(Q) = {total} bits exceeds {bound}, the 128-bit security bound for "
            f"N = {poly_modulus_degree} (HomomorphicEncryption.org standard): use fewer or "
            "smaller primes, or a larger N"
        )


def bfv_context(
    poly_modulus_degree: int, plain_modulus: int, coeff_mod_bit_sizes: list[int]
) -> ts.Context:
    """A BFV context with secret key (the key holder's); ``plain_modulus`` must allow batching."""
    check_security(poly_modulus_degree, coeff_mod_bit_sizes)
    if plain_modulus % (2 * poly_modulus_degree) != 1:
        raise ConfigError(
            f"plain_modulus must be 1 mod 2N = {2 * poly_modulus_degree} for batching"
        )
    return ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=poly_modulus_degree,
        plain_modulus=plain_modulus,
        coeff_mod_bit_sizes=coeff_mod_bit_sizes,
    )


def ckks_context(
    poly_modulus_degree: int = 8192,
    coeff_mod_bit_sizes: list[int] | None = None,
    scale_bits: int = 40,
    galois_keys: bool = False,
) -> ts.Context:
    """A CKKS context with secret key; default N = 8192, primes [60, 40, 40, 60], scale 2^40."""
    bits = coeff_mod_bit_sizes or [60, 40, 40, 60]
    check_security(poly_modulus_degree, bits)
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree, coeff_mod_bit_sizes=bits
    )
    context.global_scale = 2.0**scale_bits
    if galois_keys:
        context.generate_galois_keys()
    return context


def public_bytes(context: ts.Context) -> bytes:
    """The context without its secret key, serialized: what clients and the server receive."""
    public = context.copy()
    public.make_context_public()
    return public.serialize()


def load_public_context(data: bytes) -> ts.Context:
    """Deserialize a public context; refuse one that carries a secret key or does not parse."""
    try:
        context = ts.context_from(data)
    except (ValueError, RuntimeError) as error:
        raise ProtocolError(f"not a TenSEAL context: {error}") from None
    if context.has_secret_key():
        raise ProtocolError("a context sent to clients or the server must not hold the secret key")
    return context


def key_id(public_context: bytes) -> bytes:
    """SHA-256 of the serialized public context the key holder published: names the key a
    ciphertext was made under. (Serializing a secret context twice gives different bytes, so the
    id is taken from the published bytes, which everyone holds.)"""
    return hashlib.sha256(public_context).digest()


def check_key_id(expected: bytes, got: bytes, sender: str) -> None:
    if got != expected:
        raise ProtocolError(f"{sender}: ciphertext made under another key or context")


def load_vector(context: ts.Context, data: bytes, scheme: str, sender: str):
    """A BFV or CKKS vector from bytes, with parse errors turned into `ProtocolError`."""
    loader = {"bfv": ts.bfv_vector_from, "ckks": ts.ckks_vector_from}[scheme]
    try:
        return loader(context, data)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ProtocolError(f"{sender}: malformed {scheme.upper()} ciphertext ({error})") from None
