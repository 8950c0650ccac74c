"""Benchmark harnesses are imported by their bare names from the repository's benchmarks/ folder,
as `veil bench` does (opacus installs a stray top-level ``benchmarks`` package, so the folder
itself cannot be imported as a package)."""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
