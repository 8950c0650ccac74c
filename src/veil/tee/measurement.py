"""The aggregator's measurement: the identity clients compare against their allowlist.

On SGX the measurement is MRENCLAVE, SHA-256 over the enclave's initial pages as the CPU loads
them. Under Gramine those pages include the manifest, which pins every trusted file — veil's
code, the run config, Python and its dependencies — by SHA-256, so MRENCLAVE changes when any of
them does; ``veil tee build`` prints it, read from the signed SIGSTRUCT (ENCLAVEHASH, offset 960).

veil's own measurement mirrors this for the simulated backend and for audits: SHA-256 over a
canonical manifest of (1) every file of the installed ``veil`` package, (2) the installed
distributions ``name==version`` (the dependencies lock) and (3) the run config without its
``aggregation.tee`` section (the clients' policy, which would otherwise have to contain its own
hash). The config includes the DP settings, so clients that check the measurement also know
how much noise the aggregator adds.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from veil.errors import ConfigError

MANIFEST_HEADER = "veil-aggregator-measurement/1"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SIGSTRUCT_BYTES = 1808
SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
ENCLAVE_HASH_OFFSET = 960


@dataclass(frozen=True)
class Measurement:
    digest: bytes
    manifest: tuple[str, ...]  # the lines that were hashed, for audit

    @property
    def hex(self) -> str:
        return self.digest.hex()


def code_digests(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """SHA-256 of every file of the package, by path relative to it (bytecode caches left out)."""
    digests = {}
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            relative = path.relative_to(package_dir).as_posix()
            digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@functools.cache
def installed_dependencies() -> tuple[str, ...]:
    """``name==version`` of every installed distribution but veil itself, sorted (read once
    per process)."""
    found = {
        f"{d.metadata['Name'].lower()}=={d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() != "veil"
    }
    return tuple(sorted(found))


def aggregator_config(config: Mapping) -> dict:
    """The run config (``model_dump(mode="json")``) without ``aggregation.tee``."""
    data = json.loads(json.dumps(config))
    data.get("aggregation", {}).pop("tee", None)
    return data


def measure(code: Mapping[str, str], dependencies: Sequence[str], config: Mapping) -> Measurement:
    """SHA-256 over the canonical manifest of ``code`` digests, ``dependencies`` and ``config``."""
    canonical = json.dumps(aggregator_config(config), sort_keys=True, separators=(",", ":"))
    lines = [MANIFEST_HEADER]
    lines += [f"file {digest} {path}" for path, digest in sorted(code.items())]
    lines += [f"dependency {d}" for d in sorted(dependencies)]
    lines.append(f"config {hashlib.sha256(canonical.encode()).hexdigest()}")
    digest = hashlib.sha256("\n".join(lines).encode()).digest()
    return Measurement(digest, tuple(lines))


def measure_aggregator(config: Mapping) -> Measurement:
    """The measurement of this installation running ``config`` (a JSON-ready mapping)."""
    return measure(code_digests(), installed_dependencies(), config)


def parse_measurement(text: str, where: str = "measurement") -> bytes:
    """A measurement from hex: 32 bytes (MRENCLAVE, veil's own) or 48 bytes (TDX MRTD)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) not in (32, 48):
        raise ConfigError(
            f"{where} must be 64 or 96 hex digits (MRENCLAVE or MRTD, as `veil tee build` or "
            f"`veil tee measure` prints it) (got {text!r})"
        )
    return value


def mrenclave_from_sigstruct(data: bytes) -> bytes:
    """MRENCLAVE (ENCLAVEHASH) of an SGX SIGSTRUCT, e.g. Gramine's ``.sig`` file."""
    if len(data) != SIGSTRUCT_BYTES or data[:16] != SIGSTRUCT_HEADER:
        raise ConfigError(
            f"not an SGX SIGSTRUCT ({len(data)} bytes; one has {SIGSTRUCT_BYTES} and starts "
            f"with {SIGSTRUCT_HEADER.hex()}): pass the .sig file gramine-sgx-sign wrote"
        )
    return data[ENCLAVE_HASH_OFFSET : ENCLAVE_HASH_OFFSET + 32]
