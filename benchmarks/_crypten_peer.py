"""W5's peer: the same logistic regression trained with CrypTen 0.4.1, run as its own script.

``python benchmarks/_crypten_peer.py PARTIES EPOCHS`` prints one JSON line: the online seconds
(slowest party's training loop), the test accuracy of the decrypted model, and CrypTen's
settings. Rows are split among the parties as in veil's run (`veil.mpc.experiment`), with the
same batches; CrypTen uses its own sigmoid (exp and reciprocal approximations) and its default
trusted-first-party triples, with gloo over loopback between ``multiprocessing`` processes.

CrypTen 0.4.1 needs an import shim on torch 2.13 (`import_crypten`): it imports ``onnx`` and
``torch.onnx._internal.registration`` at import time, only for model conversion, which W5 does
not use. It is installed apart from veil's environment, because its metadata asks for the
deprecated ``sklearn`` package (``pip install --no-deps --target .venv/peers/crypten
crypten==0.4.1 omegaconf==2.4.0``); ``VEIL_CRYPTEN_PATH`` overrides that folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

DEFAULT_PATH = Path(__file__).resolve().parents[1] / ".venv" / "peers" / "crypten"


def import_crypten():
    """Import CrypTen from its own folder, with stand-ins for the modules torch 2.13 lacks."""
    path = os.environ.get("VEIL_CRYPTEN_PATH", str(DEFAULT_PATH))
    if path not in sys.path:
        sys.path.append(path)  # appended: CrypTen's wheel also ships a top-level "benchmarks"
    if "onnx" not in sys.modules:
        onnx = types.ModuleType("onnx")
        onnx.numpy_helper = types.ModuleType("onnx.numpy_helper")
        sys.modules.update({"onnx": onnx, "onnx.numpy_helper": onnx.numpy_helper})
    try:
        import torch.onnx._internal.registration  # noqa: F401
    except ImportError:
        registration = types.ModuleType("torch.onnx._internal.registration")
        registration.registry = None
        sys.modules["torch.onnx._internal.registration"] = registration
    import crypten

    return crypten


def train(parties: int, epochs: int) -> dict:
    """CrypTen logistic regression on breast cancer, rows split among ``parties``."""
    crypten = import_crypten()
    from crypten.mpc import run_multiprocess

    from veil.config import DataConfig
    from veil.mpc.config import MpcConfig
    from veil.mpc.experiment import prepare_parties
    from veil.mpc.plaintext import batch_order, design_matrix, logits

    mpc = MpcConfig(parties=parties, epochs=epochs)
    # the hospitals' rows, standardised in the clear (veil scales them inside its online run)
    spec, _, (x_train, y_train, x_test, y_test) = prepare_parties(mpc, DataConfig(), 0)
    cuts = np.cumsum(spec.row_counts)[:-1]
    blocks = [torch.tensor(design_matrix(x), dtype=torch.float32) for x in np.split(x_train, cuts)]
    labels = [torch.tensor(y, dtype=torch.float32)[:, None] for y in np.split(y_train, cuts)]
    batches = list(batch_order(spec.num_rows, spec.batch_size, epochs, spec.seed))

    @run_multiprocess(world_size=parties)
    def party() -> tuple[float, np.ndarray]:
        rank = crypten.communicator.get().get_rank()
        x = crypten.cat([crypten.cryptensor(b, src=i) for i, b in enumerate(blocks)], dim=0)
        y = crypten.cat([crypten.cryptensor(b, src=i) for i, b in enumerate(labels)], dim=0)
        w = crypten.cryptensor(torch.zeros(blocks[0].shape[1], 1))
        started = time.perf_counter()
        for epoch in batches:
            for rows in epoch:
                index = torch.tensor(rows)
                xb, yb = x[index], y[index]
                residual = (xb.matmul(w).sigmoid() - yb) * (mpc.learning_rate / len(rows))
                w = w - xb.t().matmul(residual)
        seconds = time.perf_counter() - started
        del rank
        return seconds, w.get_plain_text().numpy()

    started = time.perf_counter()
    results = party()
    wall = time.perf_counter() - started
    weights = results[0][1].astype(np.float64)
    accuracy = float(np.mean((logits([weights], x_test) > 0) == y_test))
    return {
        "parties": parties,
        "epochs": epochs,
        "seconds": max(r[0] for r in results),
        "wall_seconds": wall,
        "accuracy": accuracy,
        "sigmoid": "CrypTen default (exp by limit approximation, Newton reciprocal)",
        "triples": "trusted first party (CrypTen default)",
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(train(int(sys.argv[1]), int(sys.argv[2]))))
