"""``veil tee build``: the Gramine-SGX enclave of the aggregator, and its measurement.

Steps (Gramine ≥ 1.6 on an SGX machine with the DCAP stack; see docs/tee.md):

1. ``gramine-manifest`` renders ``gramine/veil-server.manifest.template`` with this
   installation's paths: Python, its standard library, the site-packages holding veil's
   dependencies, veil's source, the run config, and the folders for outputs and certificates;
2. ``gramine-sgx-sign`` hashes every trusted file into the manifest, measures the enclave and
   signs its SIGSTRUCT (``veil-server.sig``) with the enclave signing key;
3. MRENCLAVE is read from the SIGSTRUCT and written to ``measurement.txt``: publish it, and
   put it in the clients' ``aggregation.tee.measurement``.

Then ``gramine-sgx veil-server`` (in OUT) starts ``veil server`` inside the enclave.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from veil.errors import ConfigError
from veil.tee.measurement import PACKAGE_DIR, mrenclave_from_sigstruct

TEMPLATE = Path(__file__).resolve().parent / "gramine" / "veil-server.manifest.template"
NAME = "veil-server"
GRAMINE_DOCS = "https://gramine.readthedocs.io/en/stable/installation.html"


@dataclass(frozen=True)
class EnclaveBuild:
    manifest: Path
    signed_manifest: Path
    sigstruct: Path
    mrenclave: bytes


def manifest_variables(
    config: Path,
    out: Path,
    certs: Path,
    debug: bool = False,
    server_args: tuple[str, ...] = (),
    enclave_size: str = "16G",
    threads: int = 4,
) -> dict[str, str]:
    """The ``-D`` values ``gramine-manifest`` renders the template with."""
    argv = ["python3", "-m", "veil", "server", "/veil/config.yaml", "--out", "/veil/out"]
    argv += ["--certs", "/veil/certs", *server_args]
    return {
        "entrypoint": str(Path(sys.executable).resolve()),
        "arch_libdir": f"/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}",
        "log_level": "debug" if debug else "error",
        "argv": json.dumps(argv),  # a TOML array of strings
        "site_packages": sysconfig.get_paths()["purelib"],
        "veil_source": str(PACKAGE_DIR.parent),
        "config": str(config.resolve()),
        "out": str(out.resolve()),
        "certs": str(certs.resolve()),
        "debug": "true" if debug else "false",
        "enclave_size": enclave_size,
        "max_threads": str(max(16, 4 * threads)),
        "threads": str(threads),
    }


def gramine_tool(name: str) -> str:
    """Path of a Gramine command, or a `ConfigError` saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            f"{name} not found on PATH: veil tee build needs Gramine with SGX support "
            f"({GRAMINE_DOCS}); to develop without SGX, use aggregation.tee.backend: simulated"
        )
    return path


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{Path(command[0]).name} failed ({result.returncode}): {last[0]}")


def build_enclave(
    config: Path,
    out: Path,
    certs: Path,
    debug: bool = False,
    signing_key: Path | None = None,
    server_args: tuple[str, ...] = (),
) -> EnclaveBuild:
    """Render, sign and measure the enclave of ``veil server CONFIG`` into ``out``."""
    if not config.is_file():
        raise ConfigError(f"config file not found: {config}")
    if signing_key is not None and not signing_key.is_file():
        raise ConfigError(
            f"enclave signing key {signing_key} not found (gramine-sgx-gen-private-key makes one)"
        )
    render, sign = gramine_tool("gramine-manifest"), gramine_tool("gramine-sgx-sign")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / f"{NAME}.manifest"
    variables = manifest_variables(config, out, certs, debug, server_args)
    defines = [f"-D{key}={value}" for key, value in variables.items()]
    _run([render, *defines, str(TEMPLATE), str(manifest)])
    signed = out / f"{NAME}.manifest.sgx"
    key = ["--key", str(signing_key)] if signing_key is not None else []
    _run([sign, "--manifest", str(manifest), "--output", str(signed), *key])
    sigstruct = out / f"{NAME}.sig"
    if not sigstruct.is_file():
        raise ConfigError(f"gramine-sgx-sign wrote no {sigstruct.name} in {out}")
    mrenclave = mrenclave_from_sigstruct(sigstruct.read_bytes())
    (out / "measurement.txt").write_text(mrenclave.hex() + os.linesep)
    return EnclaveBuild(manifest, signed, sigstruct, mrenclave)
