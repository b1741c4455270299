"""The training loop: step, clip, optimizer, schedule and stop conditions; the rest hangs off callbacks.

The trainer knows nothing about text: a task (each use's task.py; what the trainer reads of it is the Task
protocol of task.py) supplies the batches, the loss and the held-out metrics, and callbacks (callbacks.py) write
metrics, checkpoints and samples. Run setup (configs, run directories, resuming) is in runs.py.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from rnnlm.core.errors import CheckpointError, TrainingError
from rnnlm.training import distributed
from rnnlm.training.config import TrainConfig
from rnnlm.training.graph_step import GraphedStep, fused_optimizer
from rnnlm.training.optim import WeightAverage, build_optimizer, lr_at
from rnnlm.training.task import Task
from rnnlm.training.threads import ThreadChooser


class Trainer:
    """Trains ``model`` on ``task`` as ``cfg`` says; ``fit()`` returns why it stopped."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        cfg: TrainConfig,
        callbacks: Sequence[Any] = (),
        log: Callable[[str], None] = print,
    ) -> None:
        self.model, self.task, self.cfg, self.callbacks, self.log = model, task, cfg, list(callbacks), log
        self.optimizer = build_optimizer(model, cfg)
        device = next(model.parameters()).device
        on_cpu = device.type == "cpu"
        self.graph: GraphedStep | None = None
        # Under torchrun the loss runs through DistributedDataParallel, which averages the gradients over the
        # ranks during backward (and broadcasts rank 0's weights now, so every rank starts from the same ones).
        self.ddp: torch.nn.Module | None = None
        if distributed.active():
            ids = [device] if device.type == "cuda" else None
            bucket = {"bucket_cap_mb": CPU_BUCKET_MB} if on_cpu else {}
            self.ddp = DDP(_TaskLoss(model, task), device_ids=ids, forward_sync_buffers=False, **bucket)
            if distributed.rank() > 0:  # dropout masks of their own on each rank; rank 0 draws a single run's
                torch.manual_seed(cfg.seed * 1_000_003 + distributed.rank())
        elif not on_cpu and cfg.cuda_graph != "off" and task.fixed_shapes:
            self.optimizer = fused_optimizer(model, self.optimizer)  # capturable, lr a device tensor
            self.graph = GraphedStep(self)
        self.threads = ThreadChooser(cfg.threads if on_cpu else torch.get_num_threads())
        self.average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
        self.step = self.epoch = self.batch = 0  # optimizer steps; epochs done; batches done in this epoch
        self.lr = cfg.lr
        self.step_seconds = 0.0  # wall time of the last batch and step, for throughput
        self.elapsed_before = 0.0  # seconds spent in earlier sessions of this run (before a resume)
        self._t0 = self._mark = time.perf_counter()
        self.stop_reason: str | None = None
        self._requested: str | None = None  # several ranks: a stop asked for here, not yet agreed (agree())
        self._clock = 0.0  # several ranks: rank 0's elapsed() at the last agree(), which the budget reads

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> str:
        """Train until a limit, early stopping or Ctrl-C; callbacks save on the way out."""
        total = self.total_steps()
        self._t0 = self._mark = time.perf_counter()
        self._clock = self.elapsed_before
        try:
            with _Interrupt(self), self.threads.scope():  # the thread count set once per change
                while not self.stopping():
                    for batch in self.task.batches(self.epoch, start=self.batch):
                        self.lr = lr_at(self.cfg, self.step, total, self.clock())
                        loss, count = self.train_step(batch)
                        self.step, self.batch = self.step + 1, self.batch + 1
                        self.step_seconds, self._mark = time.perf_counter() - self._mark, time.perf_counter()
                        self.agree()
                        self.fire("on_step", loss, count)
                        if self.stopping():
                            break
                    if self.batch >= self.task.num_batches(self.epoch):
                        self.epoch, self.batch = self.epoch + 1, 0
                        with self.threads.outside():  # evaluation with the count found before training
                            self.fire("on_epoch_end")
                        self.agree()
                    self._mark = time.perf_counter()  # evaluation and saving do not count as step time
            self.fire("on_train_end")
        except Exception as e:
            if distributed.is_peer_failure(e):
                raise TrainingError(
                    f"rank {distributed.rank()} of {distributed.world_size()}: another rank stopped answering at "
                    f"step {self.step + 1} ({str(e).splitlines()[0][:200]}); its own error, if it had one, is "
                    "printed above. The run can be resumed from its last checkpoint with the same number of ranks."
                ) from None
            raise
        return self.stopping() or "unknown"

    def agree(self) -> None:
        """Several ranks: agree on whether to stop, and on the clock, so that every rank takes the same steps.

        A stop asked for on any rank (Ctrl-C or SIGTERM reaching one of them, a callback) stops them all, and the
        time budget and a time-based schedule read rank 0's clock; one small all-reduce per step."""
        if self.ddp is None:
            return
        interrupted, other, clock = distributed.all_sum(
            [
                self._requested == INTERRUPTED,
                self._requested is not None and self._requested != INTERRUPTED,
                self.elapsed() if distributed.is_main() else 0.0,
            ]
        )
        self._clock = clock
        if self.stop_reason is None and interrupted:
            self.stop_reason = INTERRUPTED
        elif self.stop_reason is None and other:
            self.stop_reason = self._requested or "stopped by another rank"

    def train_step(self, batch: Any) -> tuple[float | torch.Tensor, int]:
        """One optimizer step: forward, loss, backward, clip, update. Returns the loss and its count.

        On a GPU with ``--cuda-graph`` the step replays a CUDA graph (graph_step.py), and the loss comes
        back as a device tensor, read only when a line is logged: no sync per step.
        """
        self.model.train()
        if self.graph is not None:
            for group in self.optimizer.param_groups:
                group["lr"].fill_(self.lr)
            loss = self.graph(batch)
            log_due = self.cfg.log_every and (self.step + 1) % self.cfg.log_every == 0
            epoch_end = self.batch + 1 >= self.task.num_batches(self.epoch)
            self.graph.check(self.step + 1, force=bool(log_due or epoch_end))
            if self.average is not None:
                self.average.update()
            return loss, self.graph.count(batch)
        with self.threads.step():  # the thread count last timed fastest (threads.py)
            # A task may return a third value, the loss to log, when its objective adds penalties (AR/TAR).
            if self.ddp is None:
                loss, count, *logged = self.task.loss(self.model, batch)
                value = (logged[0] if logged else loss).item()
                bad_objective = bool(logged) and not math.isfinite(loss.item())
            else:
                loss, count, value, bad_objective = self._ranks_loss(batch)
            if not math.isfinite(value):  # checked before the update, so the weights in memory stay good
                raise TrainingError(
                    f"the training loss became {value} at step {self.step + 1} (epoch {self.epoch + 1}) with lr "
                    f"{self.lr:g}. Try a lower --lr, gradient clipping (--clip, now {self.cfg.clip:g}) or "
                    f"--optimizer adamw; the weights before this step are in memory, the last saved ones in the "
                    f"run's last checkpoint."
                )
            if bad_objective:
                raise TrainingError(f"the training objective became {loss.item()} at step {self.step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            self.optimizer.step()
            if self.average is not None:
                self.average.update()
        return value, count

    def _ranks_loss(self, batch: Any) -> tuple[torch.Tensor, int, float, bool]:
        """Several ranks: this rank's objective, weighted so that DDP's mean of the ranks' gradients is the
        gradient of the mean over the whole global batch (ranks may hold different numbers of targets), and the
        global count and logged loss, which every rank sees alike (so all raise alike on a non-finite one)."""
        assert self.ddp is not None
        loss, count, *logged = self.ddp(batch)
        value = float((logged[0] if logged else loss).item())
        bad = bool(logged) and not math.isfinite(loss.item())
        total, weighted, bads = distributed.all_sum([count, value * count, bad])
        loss = loss * (count * distributed.world_size() / total)
        return loss, int(total), weighted / total, bads > 0

    def held_out(self) -> dict[str, float]:
        """The task's held-out metrics. Several ranks: the task shards them itself, or rank 0 computes them and
        hands them to the others, so that every rank sees the same metrics (and stops early alike)."""
        if self.ddp is None or self.task.shards_evaluation:
            return self.task.evaluate(self.model)
        return distributed.broadcast(self.task.evaluate(self.model) if distributed.is_main() else None)

    def evaluation_weights(self) -> AbstractContextManager:
        """The weights that evaluation and the best checkpoint see: the average with --ema, else the model's;
        with the thread count found before training (evaluation runs as it did when each step restored it)."""
        stack = ExitStack()
        stack.enter_context(self.threads.outside())
        if self.average is not None:
            stack.enter_context(self.average.swapped())
        return stack

    # -- stop conditions, time, progress ----------------------------------------------------------------
    def stopping(self) -> str | None:
        """Why the run stops now (the first limit reached, or a request), else None."""
        cfg = self.cfg
        if self.stop_reason:
            return self.stop_reason
        if cfg.epochs is not None and self.epoch >= cfg.epochs:
            return f"--epochs {cfg.epochs} reached"
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return f"--max-steps {cfg.max_steps} reached"
        if cfg.time_budget is not None and self.clock() >= cfg.time_budget:
            return f"--time-budget {cfg.time_budget:g} s reached"
        return None

    def request_stop(self, reason: str) -> None:
        """Stop after the current step (callbacks and Ctrl-C use this); several ranks stop once they agree."""
        if self.ddp is None:
            self.stop_reason = self.stop_reason or reason
        else:
            self._requested = self._requested or reason

    def clock(self) -> float:
        """The seconds that the time budget and a time-based schedule read: elapsed(), or with several ranks
        rank 0's elapsed() at the last step, the same on every rank."""
        return self.elapsed() if self.ddp is None else self._clock

    def total_steps(self) -> int | None:
        """Steps the run will take, when bounded by epochs or max_steps (for cosine decay)."""
        by_epochs = self.cfg.epochs * self.task.num_batches(0) if self.cfg.epochs else None
        bounds = [b for b in (by_epochs, self.cfg.max_steps) if b]
        return min(bounds) if bounds else None

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self._t0

    def epoch_progress(self) -> float | int:
        """Epochs done: a whole number at an epoch's end, else with the fraction of the current one."""
        if self.batch == 0:
            return self.epoch
        return round(self.epoch + self.batch / max(self.task.num_batches(self.epoch), 1), 4)

    def report_due(self, epoch_end: bool) -> bool:
        """Whether a log point is shown on the console: the one place that decides.

        Lines every --log-every steps always are; epoch-end lines (and a language model's samples) every
        ``task.report_period`` epochs (by default every epoch), and at the end of the run.
        """
        if not epoch_end:
            return True
        return self.epoch % self.task.report_period == 0 or self.stopping() is not None

    # -- callbacks and state -----------------------------------------------------------------------------
    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback that has it, in order."""
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None:
                hook(self, *args)

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs besides the weights."""
        rng = {"torch": torch.get_rng_state()}
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        task = self.task.state_dict()
        # Several ranks: each has its own RNG (dropout) and task state (its lanes' carried state); all are
        # gathered (every rank calls this at the same point), rank 0's also where a single process keeps them.
        ranks = distributed.gather({"rng": rng, "task": task}) if self.ddp is not None else None
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "elapsed": self.elapsed(),
            "world_size": distributed.world_size(),
            "optimizer": _plain_lr(self.optimizer.state_dict()),
            "rng": rng,
            "task": task,
            **({"ranks": ranks} if ranks is not None else {}),
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")},
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        saved, world = int(st.get("world_size", 1)), distributed.world_size()
        if saved != world:
            raise CheckpointError(
                f"the last checkpoint was written by a run of {saved} process(es) and this one has {world}; an "
                f"exact resume needs the same number (each rank carries its own state): start it with "
                + (f"torchrun --nproc-per-node {saved} (times --nnodes)" if saved > 1 else "a single process")
            )
        if self.ddp is not None:
            st = {**st, **st["ranks"][distributed.rank()]}
        self.step, self.epoch, self.batch = st["step"], st["epoch"], st["batch"]
        self.elapsed_before = st["elapsed"]
        # A saved state carries its optimizer's settings, the implementation among them; this run keeps its
        # own (fused or not, capturable), and the graph's optimizer its lr on the device, whatever optimizer
        # wrote the checkpoint (a CPU run, an older torch).
        own = [{k: g[k] for k in ("fused", "capturable", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(st["optimizer"])
        device = next(self.model.parameters()).device
        for group, keep in zip(self.optimizer.param_groups, own, strict=True):
            group.update(keep)
            if self.graph is not None:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
        self.task.load_state_dict(st["task"])
        if self.average is not None:
            self.average.load_state_dict(st["average"])
        for cb in self.callbacks:
            if hasattr(cb, "load_state_dict") and type(cb).__name__ in st["callbacks"]:
                cb.load_state_dict(st["callbacks"][type(cb).__name__])
        torch.set_rng_state(st["rng"]["torch"])
        device = next(self.model.parameters()).device
        if "cuda" in st["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(st["rng"]["cuda"], device)


def _plain_lr(sd: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with a tensor lr (the CUDA graph's) written as a number, as any optimizer reads it."""
    for group in sd["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return sd


class _Interrupt:
    """First Ctrl-C asks the loop to stop after the current step (callbacks then save); a second aborts."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._old: Any = None
        self._old_term: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if INTERRUPTED in (self.trainer.stop_reason, self.trainer._requested):
            raise KeyboardInterrupt
        self.trainer.request_stop(INTERRUPTED)
        self.trainer.log("interrupted: finishing this step and saving the last checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            if self.trainer.ddp is not None:  # torchrun passes a SIGTERM on to every rank: stop and save alike
                self._old_term = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)


CPU_BUCKET_MB = 2.0
"""DDP's gradient bucket on the CPU (gloo). Its default, 25 MB, holds a whole small model, so the one all-reduce
waits for the end of backward; 2 MB buckets go out while backward computes the rest: LSTM 2 x 512 on 2 ranks x 1
thread went from 1.67x to 1.89-1.92x over one process (bench/notes/scale.md). GPUs (NCCL) keep DDP's default."""


class _TaskLoss(torch.nn.Module):
    """The task's loss as a module's forward, which DistributedDataParallel wraps (it syncs what runs through a
    forward): a task calls any part of the model (a language model's encoder and head), not just ``forward``."""

    def __init__(self, model: torch.nn.Module, task: Task) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch: Any) -> tuple[Any, ...]:
        return tuple(self.task.loss(self.model, batch))


INTERRUPTED = "interrupted (Ctrl-C)"
