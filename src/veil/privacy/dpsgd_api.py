"""An Opacus-style API over the DP-SGD core: ``make_private(model, optimizer, data_loader, ...)``.

    model, optimizer, loader = make_private(model, optimizer, loader, noise_multiplier=1.0,
                                            max_grad_norm=1.0, delta=1e-5)
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()   # a mean (or sum) of per-row losses
        optimizer.step()                  # clipped sum + noise → .grad → the wrapped step
    optimizer.epsilon()                   # ε spent so far at the δ given to make_private

The model is returned unchanged but with book-keeping hooks (`veil.privacy.dpsgd_bookkeeping`):
its forward and backward passes record what the step needs; ``loss.backward()`` leaves ``.grad``
untouched and ``optimizer.step()`` writes the private gradient there before stepping. The loader
draws Poisson batches (`veil.privacy.dpsgd_sampling`) from the secure generator. Threat model and
the meaning of ε: `veil.privacy.dpsgd`.

Speed: on Linux call `veil.runtime.memory.keep_freed_memory()` first (``veil run`` does), or each
step's per-sample tensors pay fresh page faults (steps several times slower on 2 CPU cores).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from dp_accounting import DpEvent
from torch import Tensor, nn
from torch.utils.data import DataLoader

from veil.errors import ConfigError, check
from veil.privacy.accounting import calibrate_noise_multiplier, dpsgd_epsilon, dpsgd_event
from veil.privacy.dpsgd import check_dpsgd_arguments, noisy_average
from veil.privacy.dpsgd_bookkeeping import BookKeeping
from veil.privacy.dpsgd_sampling import PoissonBatchSampler
from veil.privacy.ledger import PrivacyLedger
from veil.randomness import noise_generator

ACCOUNTANTS = ("pld", "rdp")


class DPOptimizer(torch.optim.Optimizer):
    """Wraps ``optimizer``: ``step()`` first sets each ``.grad`` to the DP-SGD gradient.

    Shares ``param_groups`` and ``state`` with the wrapped optimizer, so learning-rate
    schedulers work on it. ``epsilon()`` and ``dp_event()`` describe the steps taken so far.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        keeper: BookKeeping,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        expected_batch_size: float,
        delta: float,
        accountant: str = "pld",
        loss_reduction: str = "mean",
        generator: torch.Generator,
        ledger: PrivacyLedger | None = None,
        ledger_block: int = 1,
    ) -> None:
        check_dpsgd_arguments(noise_multiplier, max_grad_norm, expected_batch_size)
        check(ledger_block >= 1, f"ledger_block must be >= 1 (got {ledger_block})")
        self.ledger, self.ledger_block, self.reserved = ledger, ledger_block, 0
        self.original_optimizer = optimizer
        self.keeper = keeper
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.sample_rate, self.expected_batch_size = sample_rate, expected_batch_size
        self.delta, self.accountant, self.loss_reduction = delta, accountant, loss_reduction
        self.generator = generator
        self.steps = 0
        self.defaults, self.state = optimizer.defaults, optimizer.state
        self.param_groups = optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients and whatever the last passes captured."""
        self.original_optimizer.zero_grad(set_to_none)
        self.keeper.reset()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Clipped sum of the captured passes + N(0, σ²C²), over q·N, into ``.grad``; then step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.ledger is not None and self.steps == self.reserved:
            self._reserve_budget()
        summed, _ = self.keeper.clipped_sum(self.max_grad_norm, self.loss_reduction)
        noised = noisy_average(
            summed,
            self.noise_multiplier,
            self.max_grad_norm,
            self.expected_batch_size,
            self.generator,
        )
        for name, param in self.keeper.module.named_parameters():
            if name in noised:
                param.grad = noised[name]
        self.original_optimizer.step()
        self.steps += 1
        return loss

    def _reserve_budget(self) -> None:
        """Record the next ``ledger_block`` steps in the ledger before taking the first of them
        (PrivacyBudgetExceeded, and no step, if they would overspend)."""
        block = dpsgd_event(self.noise_multiplier, self.sample_rate, self.ledger_block)
        self.ledger.record(self.reserved // self.ledger_block + 1, [block])
        self.reserved += self.ledger_block

    def dp_event(self) -> DpEvent:
        """The dp-accounting event of the steps taken: ``steps`` Poisson-subsampled Gaussians."""
        return dpsgd_event(self.noise_multiplier, self.sample_rate, self.steps)

    def epsilon(self, delta: float | None = None) -> float:
        """ε of the steps taken so far at ``delta`` (default: make_private's), by the accountant;
        with a ledger (and the default δ), the ledger's ε of every step it reserved."""
        if self.ledger is not None and delta is None:
            return self.ledger.epsilon()
        if self.steps == 0:
            return 0.0
        delta = self.delta if delta is None else delta
        return dpsgd_epsilon(
            self.noise_multiplier, self.sample_rate, self.steps, delta, self.accountant
        )

    def state_dict(self) -> dict:
        """The wrapped optimizer's state (the step count is in ``steps``)."""
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the wrapped optimizer's state."""
        self.original_optimizer.load_state_dict(state_dict)


def _empty_batch(example: object) -> object:
    """``example`` (a collated batch) with zero rows: tensors sliced to ``[:0]``."""
    if isinstance(example, Tensor):
        return example[:0]
    if isinstance(example, dict):
        return {k: _empty_batch(v) for k, v in example.items()}
    if isinstance(example, tuple | list):
        return type(example)(_empty_batch(v) for v in example)
    return example


def poisson_data_loader(data_loader: DataLoader, generator: torch.Generator) -> DataLoader:
    """The same data set and collation, batches drawn by Poisson sampling at q = b / N.

    ``len(data_loader)`` steps per epoch; an empty draw yields a batch with zero rows.
    """
    dataset, collate = data_loader.dataset, data_loader.collate_fn
    num_rows = len(dataset)
    sampler = PoissonBatchSampler(
        num_rows, data_loader.batch_size / num_rows, len(data_loader), generator
    )

    def collate_or_empty(rows: list) -> object:
        return collate(rows) if rows else _empty_batch(collate([dataset[0]]))

    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_or_empty,
        num_workers=data_loader.num_workers,
        pin_memory=data_loader.pin_memory,
    )


def _check_arguments(
    model: nn.Module,
    data_loader: DataLoader,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    max_grad_norm: float,
    delta: float,
    epochs: int | None,
    accountant: str,
    loss_reduction: str,
) -> None:
    check(any(p.requires_grad for p in model.parameters()), "model has no trainable parameters")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError(
            "give exactly one of noise_multiplier and target_epsilon "
            f"(got noise_multiplier={noise_multiplier}, target_epsilon={target_epsilon})"
        )
    if target_epsilon is not None:
        check(target_epsilon > 0, f"target_epsilon must be > 0 (got {target_epsilon})")
        check(
            epochs is not None and epochs >= 1,
            f"target_epsilon needs epochs >= 1, the length of training (got {epochs})",
        )
    check(max_grad_norm > 0, f"max_grad_norm must be > 0 (got {max_grad_norm})")
    check(0 < delta < 1, f"delta must be in (0, 1) (got {delta})")
    check(
        accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS} (got {accountant!r})"
    )
    check(
        loss_reduction in ("mean", "sum"),
        f"loss_reduction must be 'mean' or 'sum' (got {loss_reduction!r})",
    )
    batch_size, rows = data_loader.batch_size, len(data_loader.dataset)
    check(
        batch_size is not None and 1 <= batch_size <= rows,
        f"data_loader needs a batch_size in [1, {rows}] (got {batch_size})",
    )


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    *,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    max_grad_norm: float,
    delta: float,
    epochs: int | None = None,
    accountant: str = "pld",
    poisson_sampling: bool = True,
    loss_reduction: str = "mean",
    noise_seed_for_testing: int | None = None,
    ledger: PrivacyLedger | None = None,
) -> tuple[nn.Module, DPOptimizer, DataLoader]:
    """DP-SGD for an ordinary training loop: ``(model, optimizer, data_loader)``, made private.

    Exactly one of ``noise_multiplier`` (σ) and ``target_epsilon``: the latter (with ``epochs``)
    calibrates the smallest σ that keeps ``epochs · len(data_loader)`` steps at sample rate
    q = batch_size / N within (target_epsilon, ``delta``). ``loss_reduction`` says whether the
    loss is the mean (default) or the sum of per-row losses. ``poisson_sampling=False`` keeps
    the loader's own batches and warns: ε then assumes Poisson sampling that did not happen.
    ``noise_seed_for_testing`` fixes noise and sampling for tests only (not private; warns).
    With a ``ledger`` (`veil.privacy.ledger`), each epoch's steps are recorded before the first
    of them runs, and a step the budget cannot afford raises `PrivacyBudgetExceeded` instead;
    its δ and accountant then define ``epsilon()``.
    """
    _check_arguments(
        model,
        data_loader,
        noise_multiplier,
        target_epsilon,
        max_grad_norm,
        delta,
        epochs,
        accountant,
        loss_reduction,
    )
    if ledger is not None and not poisson_sampling:
        raise ConfigError(
            "a ledger records Poisson-subsampled steps; with poisson_sampling=False the batches "
            "are not Poisson and the recorded ε would be wrong: keep poisson_sampling=True"
        )
    rows, steps_per_epoch = len(data_loader.dataset), len(data_loader)
    sample_rate = data_loader.batch_size / rows
    if target_epsilon is not None:
        noise_multiplier = calibrate_noise_multiplier(
            target_epsilon, sample_rate, epochs * steps_per_epoch, delta, accountant
        )
    keeper = BookKeeping(model)
    device = next(model.parameters()).device
    generator = noise_generator(noise_seed_for_testing, device=device)
    dp_optimizer = DPOptimizer(
        optimizer,
        keeper,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        sample_rate=sample_rate,
        expected_batch_size=data_loader.batch_size,
        delta=delta,
        accountant=accountant,
        loss_reduction=loss_reduction,
        generator=generator,
        ledger=ledger,
        ledger_block=steps_per_epoch,
    )
    if not poisson_sampling:
        warnings.warn(
            "poisson_sampling=False: epsilon() assumes Poisson sampling, which these shuffled "
            "fixed-size batches are not; the reported ε is not a proven guarantee",
            UserWarning,
            stacklevel=2,
        )
        return model, dp_optimizer, data_loader
    sampler_generator = noise_generator(noise_seed_for_testing, stream=1)
    return model, dp_optimizer, poisson_data_loader(data_loader, sampler_generator)
