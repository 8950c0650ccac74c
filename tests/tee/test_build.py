import json
import sys
import tomllib
from types import SimpleNamespace

import jinja2
import pytest

from veil.errors import ConfigError
from veil.tee.build import TEMPLATE, build_enclave, manifest_variables
from veil.tee.measurement import ENCLAVE_HASH_OFFSET, SIGSTRUCT_BYTES, SIGSTRUCT_HEADER

SIGN = f"""\
#!{sys.executable}
import sys
from pathlib import Path
output = Path(sys.argv[sys.argv.index("--output") + 1])
if "{{fail}}" == "yes":
    print("boom: no enclave key", file=sys.stderr)
    sys.exit(3)
sig = bytearray({SIGSTRUCT_BYTES})
sig[:16] = bytes.fromhex("{SIGSTRUCT_HEADER.hex()}")
sig[{ENCLAVE_HASH_OFFSET}:{ENCLAVE_HASH_OFFSET + 32}] = b"\\x42" * 32
if "{{write}}" == "yes":
    output.with_name("veil-server.sig").write_bytes(bytes(sig))
output.write_text("signed")
"""
RENDER = f"""\
#!{sys.executable}
import shutil, sys
shutil.copy(sys.argv[-2], sys.argv[-1])
"""


@pytest.fixture
def fake_gramine(tmp_path, monkeypatch):
    def install(fail="no", write="yes", tools=("gramine-manifest", "gramine-sgx-sign")):
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        scripts = {
            "gramine-manifest": RENDER,
            "gramine-sgx-sign": SIGN.format(fail=fail, write=write),
        }
        for name in tools:
            (folder / name).write_text(scripts[name])
            (folder / name).chmod(0o755)
        monkeypatch.setenv("PATH", str(folder))
        return folder

    return install


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: run\n")
    return path


def render(variables):
    gramine = SimpleNamespace(
        libos="/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
        runtimedir=lambda: "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
    )
    python = SimpleNamespace(stdlib="/usr/lib/python3.11")
    template = jinja2.Template(TEMPLATE.read_text(), undefined=jinja2.StrictUndefined)
    return tomllib.loads(template.render(gramine=gramine, python=python, **variables))


def test_template_renders_to_a_production_dcap_manifest(config, tmp_path):
    manifest = render(manifest_variables(config, tmp_path / "out", tmp_path / "certs"))
    sgx, loader = manifest["sgx"], manifest["loader"]
    assert sgx["debug"] is False and sgx["remote_attestation"] == "dcap"
    assert loader["argv"][1:5] == ["-m", "veil", "server", "/veil/config.yaml"]
    assert f"file:{config.resolve()}" in sgx["trusted_files"]
    assert not any(str(tmp_path / "out") in f for f in sgx["trusted_files"])  # host storage


def test_debug_build_is_marked_as_such(config, tmp_path):
    variables = manifest_variables(config, tmp_path, tmp_path, debug=True, server_args=("--x",))
    assert variables["debug"] == "true" and json.loads(variables["argv"])[-1] == "--x"
    assert render(variables)["sgx"]["debug"] is True


def test_build_signs_and_reads_the_measurement(fake_gramine, config, tmp_path):
    fake_gramine()
    result = build_enclave(config, tmp_path / "enclave", tmp_path / "certs")
    assert result.mrenclave == b"\x42" * 32
    assert (tmp_path / "enclave" / "measurement.txt").read_text().strip() == "42" * 32
    assert result.manifest.read_text() == TEMPLATE.read_text()  # the fake only copies


def test_missing_gramine_is_explained(fake_gramine, config, tmp_path):
    fake_gramine(tools=("gramine-manifest",))
    with pytest.raises(ConfigError, match="gramine-sgx-sign not found on PATH"):
        build_enclave(config, tmp_path / "enclave", tmp_path)


def test_failing_tool_reports_its_last_line(fake_gramine, config, tmp_path):
    fake_gramine(fail="yes")
    with pytest.raises(ConfigError, match=r"gramine-sgx-sign failed \(3\): boom"):
        build_enclave(config, tmp_path / "enclave", tmp_path)


def test_missing_sigstruct_is_refused(fake_gramine, config, tmp_path):
    fake_gramine(write="no")
    with pytest.raises(ConfigError, match=r"wrote no veil-server\.sig"):
        build_enclave(config, tmp_path / "enclave", tmp_path)


def test_bad_paths_are_refused(config, tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_enclave(tmp_path / "none.yaml", tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"signing key .* not found"):
        build_enclave(config, tmp_path, tmp_path, signing_key=tmp_path / "key.pem")
