"""dp-sgd: milliseconds per DP-SGD step, veil against Opacus 1.6, relative to non-private SGD.

Workload (fixed): batch 256, cross-entropy, plain SGD (lr 0.05), σ = 1, C = 1, two models:

- ``cnn``: veil's MNIST-style CNN (`veil.models.small_cnn((1, 28, 28), 10)`: two 3×3 conv + ReLU
  + max-pool blocks, 16 and 32 channels, a Linear head) on 256 rows of the bundled MNIST subset;
- ``resnet``: `veil.models.resnet.resnet18(10, 3, width=16)` (ResNet-18 blocks with GroupNorm and
  in-place ``out += identity`` / ``ReLU(inplace=True)``, 0.7 M parameters) on 256 random
  CIFAR-shaped (3×32×32) images.

Contenders, timed in this one process on the same initial model and the same batch:

- ``nonprivate``: ``loss.backward(); optimizer.step()`` with ``torch.optim.SGD``;
- ``veil``: the same loop after `veil.privacy.dpsgd_api.make_private` (book-keeping fast path);
- ``veil_vmap``: the generic functional path, `per_sample.clipped_gradient_sum` (``vmap(grad)``)
  + `dpsgd.noisy_average` + an SGD update;
- ``peer``: Opacus 1.6's ``PrivacyEngine.make_private`` (``grad_sample_mode="hooks"``), and
  ``peer_ghost``: its fast gradient clipping (``"ghost"``). A contender that fails reports its
  error instead of a time (Opacus's hooks fail on the ResNet's in-place operations).

Each step runs on the full batch of 256 rows (the expected batch of Poisson sampling: the step
time at the mean batch size). Contenders are interleaved in rounds so that load from other
processes on a shared machine hits all alike (the 1-minute load average is reported: above the
core count, every figure is slowed); warm-up steps are excluded; figures are medians.
Every contender runs with glibc keeping freed memory for reuse (`veil.runtime.memory`, as
``veil run`` does): per-sample tensors otherwise cost fresh page faults every step. Before timing,
``agreement`` compares veil's per-sample gradient norms from the fast path with the generic path.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from veil.data import load_dataset
from veil.errors import VeilError
from veil.models import small_cnn
from veil.models.resnet import resnet18
from veil.privacy.dpsgd import noisy_average
from veil.privacy.dpsgd_api import make_private
from veil.privacy.dpsgd_bookkeeping import BookKeeping
from veil.privacy.per_sample import clipped_gradient_sum
from veil.randomness import noise_generator
from veil.runtime.memory import keep_freed_memory

BATCH_SIZE = 256
LR = 0.05
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
RESNET_WIDTH = 16


@dataclass(frozen=True)
class Setting:
    """One model and its batch: ``make()`` builds the same initial model every time."""

    make: Callable[[], nn.Module]
    x: Tensor
    y: Tensor


def settings(device: str) -> dict[str, Setting]:
    mnist = load_dataset("mnist")
    x_mnist = torch.from_numpy(mnist.x[:BATCH_SIZE]) / 255.0
    y_mnist = torch.from_numpy(mnist.y[:BATCH_SIZE])
    generator = torch.Generator().manual_seed(0)
    x_cifar = torch.randn(BATCH_SIZE, 3, 32, 32, generator=generator)
    y_cifar = torch.randint(0, 10, (BATCH_SIZE,), generator=generator)

    def seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return build().to(device)

        return make

    cnn = seeded(lambda: small_cnn((1, 28, 28), 10))
    resnet = seeded(lambda: resnet18(10, 3, width=RESNET_WIDTH))
    return {
        "cnn": Setting(cnn, x_mnist.to(device), y_mnist.to(device)),
        "resnet": Setting(resnet, x_cifar.to(device), y_cifar.to(device)),
    }


Step = Callable[[], dict[str, float]]  # one training step; returns its phases in seconds


def _clock(device: str) -> Callable[[], float]:
    def now() -> float:
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def _loader(s: Setting) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(s.x, s.y)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE)


def _loop_step(model: nn.Module, optimizer, loss_fn, s: Setting, now) -> Step:
    """forward / backward / optimizer step of an ordinary training loop, timed by phase."""

    def step() -> dict[str, float]:
        begin = now()
        optimizer.zero_grad()
        loss = loss_fn(model(s.x), s.y)
        forward = now()
        loss.backward()
        backward = now()
        optimizer.step()
        end = now()
        return {"forward": forward - begin, "backward": backward - forward, "step": end - backward}

    return step


def nonprivate_step(s: Setting, now) -> Step:
    model = s.make()
    return _loop_step(model, torch.optim.SGD(model.parameters(), lr=LR), F.cross_entropy, s, now)


def veil_step(s: Setting, now) -> Step:
    model = s.make()
    model, optimizer, _ = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=LR),
        _loader(s),
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM,
        delta=1e-5,
    )
    return _loop_step(model, optimizer, F.cross_entropy, s, now)


def veil_vmap_step(s: Setting, now) -> Step:
    model = s.make()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    mask = torch.ones(len(s.y), device=s.x.device)
    generator = noise_generator(device=s.x.device)

    def step() -> dict[str, float]:
        begin = now()
        summed, _ = clipped_gradient_sum(model, params, s.x, s.y, mask, MAX_GRAD_NORM)
        clipped = now()
        noised = noisy_average(summed, NOISE_MULTIPLIER, MAX_GRAD_NORM, BATCH_SIZE, generator)
        for k in params:
            params[k].sub_(noised[k], alpha=LR)
        end = now()
        return {"per_sample_and_clip": clipped - begin, "step": end - clipped}

    return step


def opacus_step(s: Setting, now, mode: str) -> Step:
    from opacus import PrivacyEngine

    model = s.make()
    arguments = {
        "module": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=LR),
        "data_loader": _loader(s),
        "noise_multiplier": NOISE_MULTIPLIER,
        "max_grad_norm": MAX_GRAD_NORM,
        "poisson_sampling": False,
        "grad_sample_mode": mode,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "ghost":
            model, optimizer, loss_fn, _ = PrivacyEngine().make_private(
                criterion=nn.CrossEntropyLoss(), **arguments
            )
        else:
            model, optimizer, _ = PrivacyEngine().make_private(**arguments)
            loss_fn = nn.CrossEntropyLoss()
    return _loop_step(model, optimizer, loss_fn, s, now)


def agreement(s: Setting) -> float:
    """Largest relative difference of per-sample norms: fast path against ``vmap(grad)``."""
    model = s.make()
    params = {k: v.detach() for k, v in model.named_parameters()}
    rows = slice(0, 32)
    mask = torch.ones(32, device=s.x.device)
    _, expected = clipped_gradient_sum(model, params, s.x[rows], s.y[rows], mask, MAX_GRAD_NORM)
    keeper = BookKeeping(copy.deepcopy(model))
    _, norms = keeper.clipped_gradient_sum(s.x[rows], s.y[rows], mask, MAX_GRAD_NORM)
    return float(((norms - expected).abs() / expected).max())


def time_contenders(
    steps: dict[str, Step], rounds: int, per_round: int, warmup: int
) -> dict[str, dict]:
    """Median seconds per step (and per phase), contenders interleaved round by round."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(warmup):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            samples[name] += [step() for _ in range(per_round)]
    result = {}
    for name, phases in samples.items():
        totals = [sum(p.values()) for p in phases]
        result[name] = {
            "ms_per_step": 1e3 * statistics.median(totals),
            "phases_ms": {k: 1e3 * statistics.median(p[k] for p in phases) for k in phases[0]},
            "steps_timed": len(totals),
        }
    return result


def benchmark_model(
    s: Setting, device: str, quick: bool, log: Callable[[str], None]
) -> dict[str, object]:
    now = _clock(device)
    steps: dict[str, Step] = {
        "nonprivate": nonprivate_step(s, now),
        "veil": veil_step(s, now),
        "veil_vmap": veil_vmap_step(s, now),
    }
    peers: dict[str, dict[str, object]] = {}
    for key, mode in (("peer", "hooks"), ("peer_ghost", "ghost")):
        peers[key] = {"name": "opacus", "version": _opacus_version(), "mode": mode}
        try:
            step = opacus_step(s, now, mode)
            step()  # Opacus fails here, in its hooks, on in-place operations
            steps[key] = step
        except RuntimeError as error:
            peers[key]["error"] = str(error).splitlines()[0]
            log(f"  opacus {mode}: {peers[key]['error']}")
    rounds, per_round = (2, 2) if quick else (5, 4)
    timed = time_contenders(steps, rounds, per_round, warmup=1 if quick else 2)
    for key in peers:
        peers[key].update(timed.get(key, {}))
    result: dict[str, object] = {
        "veil": {**timed["veil"], "path": "book-keeping"},
        "veil_vmap": {**timed["veil_vmap"], "path": "torch.func vmap(grad)"},
        "nonprivate": timed["nonprivate"],
        **peers,
    }
    base = timed["nonprivate"]["ms_per_step"]
    result["ratio"] = timed["veil"]["ms_per_step"] / base
    result["ratio_vmap"] = timed["veil_vmap"]["ms_per_step"] / base
    for key in peers:
        result[f"{key}_ratio"] = timed[key]["ms_per_step"] / base if key in timed else None
    result["agreement"] = agreement(s)
    return result


def _opacus_version() -> str:
    import opacus

    return opacus.__version__


def benchmark_models(device: str, quick: bool, log: Callable[[str], None]) -> dict[str, dict]:
    models = {}
    for name, setting in settings(device).items():
        log(f"{name}: batch {BATCH_SIZE}, {device}, {torch.get_num_threads()} threads")
        models[name] = benchmark_model(setting, device, quick, log)
        log(f"  ratio veil/nonprivate {models[name]['ratio']:.2f}")
    return models


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Time every contender on both models; return the JSON of ``veil bench dp-sgd``.

    At torch's thread count, and again at one thread when that is more (``single_thread``).
    """
    if importlib.util.find_spec("opacus") is None:
        raise VeilError("dp-sgd needs the bench extra (Opacus): run `make bench`")
    allocator_tuned = keep_freed_memory()
    load_before = os.getloadavg()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # Opacus's
        models = benchmark_models("cpu", quick, log)
        threads = torch.get_num_threads()
        single_thread = None
        if threads > 1:
            torch.set_num_threads(1)
            try:
                single_thread = {"threads": 1, "models": benchmark_models("cpu", quick, log)}
            finally:
                torch.set_num_threads(threads)
        gpu = None
        if torch.cuda.is_available():
            gpu = {
                "name": torch.cuda.get_device_name(),
                "models": benchmark_models("cuda", quick, log),
            }
    cnn = models["cnn"]
    result = {
        "workload": "dp-sgd",
        "device": "cpu",
        "threads": threads,
        "batch_size": BATCH_SIZE,
        "models": models,
        "veil": cnn["veil"],
        "nonprivate": cnn["nonprivate"],
        "peer": cnn["peer"],
        "ratio": cnn["ratio"],
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "allocator": "glibc: freed memory kept for reuse" if allocator_tuned else "default",
        "quick": quick,
    }
    if single_thread is not None:
        result["single_thread"] = single_thread
    if gpu is not None:
        result["gpu"] = gpu
    return result
