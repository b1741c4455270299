"""Optimizers and learning-rate schedules.

The schedule is a pure function of the step (or of elapsed time when only a time budget bounds the
run), so resuming needs no scheduler state: the step count alone restores it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.autograd.graph import increment_version
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rnnlm.core.errors import ConfigError
from rnnlm.training.config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the textbook recipe) or AdamW, over every trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        settings = dict(lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)
        try:  # one fused kernel for every tensor: char-cpu's optimizer step 0.7 ms instead of 6.9 on our 2-core CPU
            fused = torch.optim.AdamW(params, **settings, fused=True)
        except (RuntimeError, ValueError):  # torch before 2.4 fuses on CUDA only; devices or dtypes it cannot fuse
            return torch.optim.AdamW(params, **settings)
        fused.register_step_post_hook(_mark_updated)
        return fused
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def _mark_updated(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Bump the version counters of the parameters a fused step wrote. torch's fused AdamW writes them without
    (torch 2.13, CPU), and the kept copies of the weights (the language model's step decoder, the one-sequence LSTM
    kernel, an ensemble's mean head) tell stale weights by those counters: without this, an evaluation during
    training could read the weights of an earlier step."""
    increment_version([p for group in optimizer.param_groups for p in group["params"]])


def lr_at(cfg: TrainConfig, step: int, total_steps: int | None, elapsed_s: float = 0.0) -> float:
    """Learning rate for the optimizer step with 0-based index `step`.

    Linear warmup over cfg.warmup_steps, then constant, step decay, or cosine decay to
    cfg.min_lr_ratio * cfg.lr. Cosine needs to know where the run ends: total_steps when the
    run is bounded by epochs or --max-steps, else the fraction of --time-budget spent.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    after = step - cfg.warmup_steps
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (after // max(cfg.step_size, 1))
    if cfg.schedule == "cosine":
        if total_steps:
            progress = after / max(total_steps - cfg.warmup_steps, 1)
        elif cfg.time_budget:
            progress = elapsed_s / cfg.time_budget
        else:
            raise ConfigError("--schedule cosine needs an end: set --epochs, --max-steps or --time-budget")
        progress = min(max(progress, 0.0), 1.0)
        floor = cfg.min_lr_ratio * cfg.lr
        return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose constant, step or cosine")


class WeightAverage:
    """An exponential moving average of a model's weights and buffers, updated after each optimizer step.

    After update t (counting from 1) the average moves toward the weights by 1 - d_t, where d_t =
    min(decay, (1 + t) / (10 + t)): the first steps' weights, far from where training ends, are soon
    forgotten instead of keeping a weight of decay ** t. The buffers (a batch norm's running statistics)
    are averaged by the same rule, so that the averaged weights are evaluated with statistics that match
    them; a buffer that is not floating point (a count) follows the model's. It is torch's public
    ``AveragedModel`` with ``use_buffers=True``, stepped by ``get_ema_multi_avg_fn`` at each update's decay.
    ``swapped()`` puts the average into the model for a while (evaluation, the best checkpoint) and then
    the trained weights and buffers back, bit for bit.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the decay of a weight average must be in (0, 1), got {decay}")
        self.decay, self.updates, self.model = decay, 0, model
        self.averaged = AveragedModel(model, multi_avg_fn=self._step, use_buffers=True)
        self.averaged.update_parameters(model)  # the first call copies: the average starts at the weights
        trainable = [p.requires_grad for p in model.parameters()]
        self.params = [p for p, t in zip(model.parameters(), trainable, strict=True) if t]
        # Frozen parameters stay equal to the model's (an average of equal values), so only these are swapped.
        self.average = [a for a, t in zip(self.averaged.module.parameters(), trainable, strict=True) if t]
        self.buffers, self.average_buffers = list(model.buffers()), list(self.averaged.module.buffers())

    def rate(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (2 + self.updates) / (11 + self.updates))

    def _step(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count: Any) -> None:
        """AveragedModel's multi_avg_fn for one group of tensors (one device and dtype)."""
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            get_ema_multi_avg_fn(self.rate())(averaged, current, _count)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    @torch.no_grad()
    def update(self) -> None:
        self.averaged.update_parameters(self.model)
        self.updates += 1

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights and buffers; after it, its own again."""
        own = [*self.params, *self.buffers]
        with torch.no_grad():
            trained = [t.detach().clone() for t in own]
            for t, a in zip(own, [*self.average, *self.average_buffers], strict=True):
                t.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, saved in zip(own, trained, strict=True):
                    t.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": list(self.average), "buffers": list(self.average_buffers)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore a saved average. One saved before buffers were averaged (no "buffers") takes the model's
        current buffers, as evaluation then used them; call it after the model's own weights are loaded."""
        self.updates = int(st["updates"])
        with torch.no_grad():
            for a, saved in zip(self.average, st["average"], strict=True):
                a.copy_(saved)
            for a, saved in zip(self.average_buffers, st.get("buffers", self.buffers), strict=True):
                a.copy_(saved)
            for a, p in zip(self.averaged.module.parameters(), self.model.parameters(), strict=True):
                if not p.requires_grad:
                    a.copy_(p)
