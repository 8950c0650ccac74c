import pytest

from veil.errors import ConfigError
from veil.tee.measurement import (
    ENCLAVE_HASH_OFFSET,
    SIGSTRUCT_BYTES,
    SIGSTRUCT_HEADER,
    code_digests,
    installed_dependencies,
    measure,
    measure_aggregator,
    mrenclave_from_sigstruct,
    parse_measurement,
)

CODE = {"veil/a.py": "00" * 32}
DEPS = ("torch==2.13.0",)
CONFIG = {"name": "run", "aggregation": {"robust": None, "tee": {"measurement": "auto"}}}


def test_measurement_is_deterministic_and_lists_what_it_hashed():
    first, second = measure(CODE, DEPS, CONFIG), measure(CODE, DEPS, CONFIG)
    assert first == second and len(first.digest) == 32 and first.hex == first.digest.hex()
    assert first.manifest[1] == f"file {'00' * 32} veil/a.py"
    assert "dependency torch==2.13.0" in first.manifest


@pytest.mark.parametrize(
    "code, deps, config",
    [
        ({"veil/a.py": "11" * 32}, DEPS, CONFIG),  # one changed file
        ({**CODE, "veil/b.py": "00" * 32}, DEPS, CONFIG),  # one more file
        (CODE, ("torch==2.12.0",), CONFIG),  # another dependency version
        (CODE, DEPS, {**CONFIG, "name": "other"}),  # another config
    ],
)
def test_any_change_of_code_dependencies_or_config_changes_it(code, deps, config):
    assert measure(code, deps, config).digest != measure(CODE, DEPS, CONFIG).digest


def test_the_clients_tee_policy_is_not_measured():
    pinned = {**CONFIG, "aggregation": {"robust": None, "tee": {"measurement": "ab" * 32}}}
    assert measure(CODE, DEPS, pinned).digest == measure(CODE, DEPS, CONFIG).digest


def test_installation_measurement_covers_veil_and_its_dependencies():
    code = code_digests()
    assert "tee/measurement.py" in code and not any("__pycache__" in p for p in code)
    deps = installed_dependencies()
    assert any(d.startswith("torch==") for d in deps) and not any(
        d.startswith("veil==") for d in deps
    )
    assert measure_aggregator(CONFIG).digest == measure(code, deps, CONFIG).digest


def test_measurements_parse_from_hex():
    assert parse_measurement("ab" * 32) == b"\xab" * 32
    assert len(parse_measurement("cd" * 48)) == 48
    for bad in ("xyz", "ab" * 31):
        with pytest.raises(ConfigError, match="must be 64 or 96 hex digits"):
            parse_measurement(bad)


def test_mrenclave_is_read_from_the_sigstruct():
    sig = bytearray(SIGSTRUCT_BYTES)
    sig[:16] = SIGSTRUCT_HEADER
    sig[ENCLAVE_HASH_OFFSET : ENCLAVE_HASH_OFFSET + 32] = b"\x42" * 32
    assert mrenclave_from_sigstruct(bytes(sig)) == b"\x42" * 32
    with pytest.raises(ConfigError, match="not an SGX SIGSTRUCT"):
        mrenclave_from_sigstruct(bytes(SIGSTRUCT_BYTES))
