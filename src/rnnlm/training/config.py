"""TrainConfig: how any model is optimised, for how long, and what gets logged and saved; EvalConfig: how held-out
data is scored. A use subclasses them for its own defaults and adds the fields only it reads (a language model's
windows and samples are in rnnlm.lm.config), so no use carries a field it ignores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlm.core.errors import ConfigError
from rnnlm.core.fields import check_choices, require, setting


@dataclass
class TrainConfig:
    """How the model is optimised, for how long, and what gets logged and saved."""

    out: str | None = setting(None, "Run directory for metrics and checkpoints (default: runs/<date-time>).")
    seed: int = setting(0, "Random seed for weights, batch order and dropout.")
    batch_size: int = setting(32, "Sequences per minibatch.")
    optimizer: str = setting("adamw", "Optimizer.", choices=("sgd", "adamw"))
    lr: float = setting(2e-3, "Peak learning rate.")
    weight_decay: float = setting(0.0, "Decoupled weight decay (AdamW) or L2 penalty (SGD).")
    momentum: float = setting(0.0, "SGD momentum.")
    adam_beta2: float = setting(0.999, "AdamW's decay rate of the squared-gradient average (its beta2; beta1 is 0.9).")
    clip: float = setting(1.0, "Clip gradients to this global L2 norm (0 = no clipping).")
    ema: float = setting(
        0.0,
        "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off). Evaluation "
        "and the best checkpoint, so the final model, use the average; the last checkpoint keeps the trained "
        "weights and the average, for an exact resume.",
    )
    schedule: str = setting("constant", "Learning-rate schedule after warmup.", choices=("constant", "step", "cosine"))
    warmup_steps: int = setting(0, "Linear warmup from 0 to --lr over this many steps.")
    step_size: int = setting(1000, "For --schedule step: multiply the lr by --gamma every this many steps.")
    gamma: float = setting(0.5, "For --schedule step: the decay factor.")
    min_lr_ratio: float = setting(0.0, "For --schedule cosine: final lr as a fraction of --lr.")
    epochs: int | None = setting(
        10,
        "Stop after this many passes over the training text. When --time-budget or --max-steps is given "
        "and --epochs is not, there is no epoch limit. Whichever limit comes first stops the run, and the "
        "run's last line names it.",
    )
    max_steps: int | None = setting(None, "Stop after this many optimizer steps.")
    time_budget: float | None = setting(None, "Stop after this many seconds of training (evaluation included).")
    patience: int = setting(
        0, "Early stopping: stop when the validation loss has not improved for this many evaluations (0 = off)."
    )
    device: str = setting("auto", "auto (cuda when available), cpu, cuda or cuda:N.")
    threads: int = setting(
        0,
        "CPU threads per training step: 0 keeps torch's default; N uses N; -1 times one thread against the "
        "default every 200 steps and uses the faster (on a shared CPU one thread often wins), at the price of "
        "bit-exact reproducibility, since the thread count changes the order of float additions.",
    )
    cuda_graph: str = setting(
        "auto",
        "On a GPU, capture the whole training step (forward, backward, clipping, optimizer) in one CUDA graph "
        "and replay it, with no host sync per step: auto and on use it for language models (batches of one "
        "shape); off runs every step eagerly.",
        choices=("auto", "on", "off"),
    )
    log_every: int = setting(0, "Write a metrics line every N steps (0 = once per epoch).")
    save_every: float = setting(
        60.0,
        "Write the last checkpoint at most every this many seconds (it is always written "
        "at the end, on Ctrl-C and when a limit stops the run).",
    )
    progress: bool = setting(True, "Show a progress bar when writing to a terminal.")

    def check(self) -> None:
        """Raise ConfigError for a setting that would fail later, before the run directory exists."""
        check_choices(self)
        for name in ("batch_size", "step_size"):
            require(getattr(self, name) >= 1, name, "must be at least 1", getattr(self, name))
        for name in ("weight_decay", "momentum", "clip", "warmup_steps", "log_every", "save_every", "patience"):
            require(getattr(self, name) >= 0, name, "must be at least 0", getattr(self, name))
        require(0.0 <= self.adam_beta2 < 1.0, "adam_beta2", "must be in [0, 1)", self.adam_beta2)
        require(0.0 <= self.ema < 1.0, "ema", "must be in [0, 1) (0 = no weight average)", self.ema)
        require(self.threads >= -1, "threads", "must be -1 (timed), 0 (torch's default) or a count", self.threads)
        require(self.lr > 0, "lr", "must be positive", self.lr)
        require(self.gamma > 0, "gamma", "must be positive", self.gamma)
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]", self.min_lr_ratio)
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, "must be at least 1 (or none)", value)
        require(
            self.time_budget is None or self.time_budget > 0,
            "time_budget",
            "must be positive (or none)",
            self.time_budget,
        )
        if self.schedule == "cosine" and self.epochs is None and self.max_steps is None and self.time_budget is None:
            raise ConfigError("--schedule cosine needs an end: set --epochs, --max-steps or --time-budget")
        try:
            device = torch_device(self.device)
        except RuntimeError as e:
            raise ConfigError(
                f"--device {self.device!r} is not a device ({e}); use auto, cpu, cuda or cuda:N"
            ) from None
        del device


@dataclass
class EvalConfig:
    """How held-out data is scored and new data predicted: the ``eval`` section of every kind of run, so that
    ``--eval-batch-size`` has one home (training's validation, ``eval`` and ``predict`` all read it)."""

    eval_batch_size: int = setting(
        256, "Sequences per forward pass when scoring held-out data or predicting (training batches: --batch-size)."
    )

    def check(self) -> None:
        require(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1", self.eval_batch_size)


def budget_governs_alone(given: dict[str, Any], train: dict[str, Any]) -> None:
    """Lift the epoch limit in ``train`` (a train section being built) when the explicit settings ``given`` set a
    --time-budget or --max-steps but not --epochs: the default (or a preset's, or a base config's) epoch limit
    would otherwise cut the budget short, which is not what asking for a budget means."""
    if "epochs" not in given and (given.get("time_budget") is not None or given.get("max_steps") is not None):
        train["epochs"] = None


def torch_device(name: str) -> Any:
    """torch.device(name), with auto allowed; imported lazily so the config module stays light."""
    import torch

    return torch.device("cpu" if name == "auto" else name)
