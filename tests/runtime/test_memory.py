import subprocess
import sys

from veil.runtime.memory import GLIBC_ENVIRONMENT, MMAP_THRESHOLD_BYTES, keep_freed_memory


def test_keep_freed_memory_takes_effect_on_linux_glibc():
    code = "from veil.runtime.memory import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = sys.platform.startswith("linux")
    assert out.stdout.strip() == str(expected)


def test_environment_matches_the_in_process_settings():
    assert GLIBC_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"] == str(MMAP_THRESHOLD_BYTES)
    assert int(GLIBC_ENVIRONMENT["MALLOC_TRIM_THRESHOLD_"]) == 2**31 - 1
    assert isinstance(keep_freed_memory(), bool)
