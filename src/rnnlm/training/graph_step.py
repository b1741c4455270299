"""The whole training step as one CUDA graph: forward, loss, backward, clipping and the optimizer step.

At the batch sizes of character models a GPU step is hundreds of small kernels, and launching them
from Python costs more than running them. A CUDA graph records the launches once and replays them
with one call. What that needs, and how it is met here:

* static inputs: each batch (and the carried state of sequential batches) is copied into buffers
  the graph reads; the final state is a graph output that the next step copies back in;
* a capturable optimizer: torch's fused SGD and AdamW, with the learning rate as a device tensor that
  the trainer refills every step (so schedules work);
* no host sync inside the step: the loss stays on the device. A non-finite loss or gradient norm sets a
  device flag that makes the update a no-op (``SkippableStep``), so the weights stay good, and the flag
  is added to a counter that ``check()`` reads every ``check_every`` steps and at every log point.

The first ``warmup`` steps run eagerly on a side stream (cuBLAS and the Triton kernels settle their
workspaces), then the next step is captured and every later step of the same shape replays it. Each
new batch shape gets a graph of its own, up to ``max_graphs``; beyond that a step runs eagerly with
the same optimizer.
"""

from __future__ import annotations

from typing import Any

import torch

from rnnlm.core.errors import TrainingError
from rnnlm.training.task import Task

State = tuple[torch.Tensor, ...]


def fused_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer and settings, fused and with the learning rate as a device tensor."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    lr = torch.tensor(float(group["lr"]), device=device)
    if isinstance(optimizer, torch.optim.AdamW):
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            fused=True,
            capturable=True,
        )
    if isinstance(optimizer, torch.optim.SGD):
        return torch.optim.SGD(
            params, lr=lr, momentum=group["momentum"], weight_decay=group["weight_decay"], fused=True
        )
    raise TypeError(f"no fused form of {type(optimizer).__name__} for a CUDA graph")


def found_inf_refused(optimizer: torch.optim.Optimizer) -> str | None:
    """Why ``optimizer``'s step cannot be told to skip through its ``found_inf`` attribute; None if it can.

    The attribute is the hook torch's ``GradScaler`` uses: a fused step reads it and leaves the weights and
    the state alone where it is non-zero. It is not public API, so before it is trusted a throwaway optimizer
    of the same class and settings, on a probe parameter of each device and dtype of ``optimizer``'s, takes one
    step with the flag clear (it must move) and one with the flag set (neither it nor the state may change).
    A step that raises, an attribute that cannot be set, or a flag that is ignored each give the reason."""
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    kinds = {(p.device, p.dtype) for group in optimizer.param_groups for p in group["params"]}
    for device, dtype in sorted(kinds, key=str):
        p = torch.nn.Parameter(torch.zeros(4, device=device, dtype=dtype))
        p.grad = torch.ones_like(p)
        lr = torch.tensor(1.0, device=device) if isinstance(settings.get("lr"), torch.Tensor) else 1.0
        try:
            probe = type(optimizer)([{**settings, "params": [p], "lr": lr}])
            probe.found_inf = torch.zeros((), device=device)  # type: ignore[attr-defined]
            probe.step()
            moved = [t.detach().clone() for t in [p, *probe.state[p].values()] if isinstance(t, torch.Tensor)]
            probe.found_inf = torch.ones((), device=device)  # type: ignore[attr-defined]
            probe.step()
        except Exception as e:  # any failure of the private hook means: do not use it
            return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if torch.equal(moved[0], torch.zeros_like(p)):
            return f"a probe step on {device} {dtype} did not move its parameter"
        now = [t for t in [p, *probe.state[p].values()] if isinstance(t, torch.Tensor)]
        if len(now) != len(moved) or not all(torch.equal(a, b) for a, b in zip(now, moved, strict=True)):
            return f"{type(optimizer).__name__} on {device} {dtype} ignores found_inf"
    return None


class SkippableStep:
    """``optimizer.step()`` that leaves the weights and the optimizer state alone where ``flag`` (a 0-dim
    device tensor) is non-zero, decided on the device: no host sync, so it can sit inside a CUDA graph.

    Where torch honours it (``found_inf_refused``), the flag is handed to the fused step as its
    ``found_inf``: no copies, one kernel. Otherwise (and for the step that creates the optimizer state) the
    step runs on public ops only: the parameters and the
    state are copied, the optimizer steps, and ``torch.where`` puts the copies back where the flag is set; a
    state tensor that the skipped step created is zeroed, which for SGD's momentum and Adam's moments and
    step count is the state before any step. ``hooked`` says which path runs, ``refused`` why not the hook.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, flag: torch.Tensor) -> None:
        self.optimizer, self.flag = optimizer, flag
        self.refused = found_inf_refused(optimizer)
        if self.refused is None:
            try:
                optimizer.found_inf = flag  # type: ignore[attr-defined]
            except Exception as e:  # an optimizer that takes no new attributes
                self.refused = f"{type(e).__name__}: {e}"
        self.hooked = self.refused is None

    def __call__(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.hooked and all(p in self.optimizer.state for p in params if p.grad is not None):
            self.optimizer.step()
            return
        # The public way; also with the hook for a step that creates the state: a fused SGD step skipped by
        # found_inf leaves the momentum it allocated uninitialised, and the next step would read it.
        with torch.no_grad():
            before = {id(t): t.clone() for t in self._tensors(params)}
            self.optimizer.step()
            skip = self.flag != 0
            for t in self._tensors(params):
                old = before.get(id(t))
                t.copy_(torch.where(skip, old, t) if old is not None else t.masked_fill(skip, 0))

    def _tensors(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The parameters and every tensor of their optimizer state: what one step may change."""
        state = [v for p in params for v in self.optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
        return params + state


class GraphedStep:
    """Runs ``trainer``'s training steps through one captured CUDA graph per batch shape."""

    def __init__(self, trainer: Any, warmup: int = 3, check_every: int = 100, max_graphs: int = 8) -> None:
        self.trainer, self.warmup, self.check_every, self.max_graphs = trainer, warmup, check_every, max_graphs
        self.model, self.clip = trainer.model, trainer.cfg.clip
        self.task: Task = trainer.task  # what the step reads of it: loss, carries_state, carry
        self.device = next(self.model.parameters()).device
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = trainer.optimizer
        self.found_inf = torch.zeros((), device=self.device)
        self.bad_steps = torch.zeros((), device=self.device)  # steps skipped for a non-finite loss or norm
        self.update = SkippableStep(self.optimizer, self.found_inf)  # skips where found_inf is set
        if not self.update.hooked:
            trainer.log(
                f"note: the fused optimizer does not take torch's found_inf flag ({self.update.refused}); a step "
                f"with a non-finite loss is undone with public ops instead (a little slower)"
            )
        self.stream = torch.cuda.Stream(self.device)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, Any]]] = {}  # by batch shape
        self.eager_steps = 0
        self.checked_at = 0
        self.capture_error: str | None = None  # why the last capture failed, if one did
        self.failed_captures = 0
        self.counts: dict[tuple, int] = {}

    # -- one step ------------------------------------------------------------------------------------
    def body(self, batch: Any) -> torch.Tensor:
        """Forward, backward, clip, flag a non-finite loss or norm, update; the loss stays on the device."""
        loss, count, *logged = self.task.loss(self.model, batch)  # logged: the loss alone, when AR/TAR add to it
        self.counts[tuple(t.shape for t in batch)] = count
        loss.backward()
        if self.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params if p.grad is not None]))
        bad = (~(torch.isfinite(loss) & torch.isfinite(norm))).float()
        self.found_inf.copy_(bad)
        self.bad_steps.add_(bad)
        self.update()
        return (logged[0] if logged else loss).detach()

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shape = tuple(t.shape for t in batch)
        carries = self.task.carries_state
        if shape in self.graphs:
            graph, s = self.graphs[shape]
            for buf, t in zip(s["batch"], batch, strict=True):
                buf.copy_(t, non_blocking=True)
            if carries:
                self._load_state(s["state"])
            graph.replay()
            if carries:
                self.task.carry = s["state_out"]
            return s["loss"]
        if self.eager_steps >= self.warmup and len(self.graphs) < self.max_graphs:
            carry = self.task.carry
            try:
                return self._capture(batch, shape, carries)
            except RuntimeError as e:  # say so, run this step eagerly, and try once more a few steps later
                if carries:
                    self.task.carry = carry
                self.capture_error = f"{type(e).__name__}: {str(e)[:2000]}"
                self.failed_captures += 1
                if self.failed_captures >= 2:
                    self.max_graphs = len(self.graphs)
                self.eager_steps = 0  # a few eager steps before the next try
                retry = "tries again after a few eager steps" if self.failed_captures < 2 else "steps run eagerly"
                self.trainer.log(f"note: CUDA graph capture failed ({str(e).splitlines()[0][:200]}); {retry}")
        return self._eager(batch)

    def _eager(self, batch: Any) -> torch.Tensor:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.optimizer.zero_grad(set_to_none=not self.graphs)  # a graph's gradients must stay put
            loss = self.body(batch)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.eager_steps += 1
        return loss

    def _load_state(self, bufs: State) -> None:
        carry = self.task.carry
        for k, buf in enumerate(bufs):
            if carry is None:
                buf.zero_()
            elif carry[k] is not buf:
                buf.copy_(carry[k])

    def _capture(self, batch: tuple[torch.Tensor, ...], shape: tuple, carries: bool) -> torch.Tensor:
        s: dict[str, Any] = {"batch": [t.clone() for t in batch]}
        if carries:
            carry = self.task.carry
            enc = self.model.encoder
            s["state"] = enc.begin_state(batch[0].shape[0]) if carry is None else tuple(c.clone() for c in carry)
            self.task.carry = s["state"]
        torch.cuda.synchronize(self.device)
        if not self.graphs:  # the first graph allocates the gradients; later ones write into the same
            self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            if self.graphs:
                self.optimizer.zero_grad(set_to_none=False)
            s["loss"] = self.body(tuple(s["batch"]))
        if carries:
            s["state_out"] = self.task.carry  # the detached final state: outputs of the graph
            self.task.carry = s["state"]  # this step's input state, which the replay below reads
        self.graphs[shape] = (graph, s)
        # Capturing records the step without running it: run it now.
        graph.replay()
        if carries:
            self.task.carry = s["state_out"]
        return s["loss"]

    def count(self, batch: tuple[torch.Tensor, ...]) -> int:
        """What the task's loss averaged over, for a batch of this shape."""
        return self.counts[tuple(t.shape for t in batch)]

    # -- the deferred check --------------------------------------------------------------------------
    def check(self, step: int, force: bool = False) -> None:
        """Every ``check_every`` steps (and when forced): a clear error if any step had a non-finite loss."""
        if not force and step - self.checked_at < self.check_every:
            return
        skipped = int(self.bad_steps.item())
        if skipped:
            raise TrainingError(
                f"the training loss or gradient became NaN or infinite in {skipped} step(s) between step "
                f"{self.checked_at + 1} and step {step} (lr {self.trainer.lr:g}); those updates were skipped, so "
                f"the weights in memory are good. Try a lower --lr, gradient clipping (--clip, now {self.clip:g}) "
                f"or --optimizer adamw, or --cuda-graph off to stop at the first bad step."
            )
        self.checked_at = step
