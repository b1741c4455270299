"""Data-parallel training under ``torchrun``: the process group, and the few collectives the loop needs.

torchrun (or Lightning Fabric, or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT) starts one process per rank; each runs the same ``rnnlm train`` and joins the group here, with gloo
on the CPU and NCCL on a GPU. Without those variables (or with WORLD_SIZE 1) nothing here does anything and a run
is exactly the single-process run.

The process group is torch's own (``torch.distributed``), so this module keeps no state of its own: it asks torch
whether a group is up. Collectives time out after ``RNNLM_DIST_TIMEOUT`` seconds (default 60), so a rank that
stops answering stops the others with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rnnlm.core.errors import RnnlmError

T = TypeVar("T")
DEFAULT_TIMEOUT = 60.0  # seconds a collective may wait for the other ranks


def launched() -> bool:
    """Whether this process was started as one of several ranks (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that logs, samples and writes files."""
    return rank() == 0


def timeout() -> float:
    """Seconds a collective waits for the other ranks (RNNLM_DIST_TIMEOUT)."""
    raw = os.environ.get("RNNLM_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        value = float(raw)
    except ValueError:
        raise RnnlmError(f"RNNLM_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise RnnlmError(f"RNNLM_DIST_TIMEOUT={raw!r} must be positive")
    return value


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched as several ranks (gloo on the CPU, NCCL on CUDA) and return the
    device this rank trains on: on CUDA, the GPU of its LOCAL_RANK. A single process gets ``device`` back."""
    if not launched():
        return device
    if not dist.is_available():
        raise RnnlmError("WORLD_SIZE > 1, but this torch build has no torch.distributed")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RnnlmError(f"WORLD_SIZE > 1 but {name} is not set; start the ranks with torchrun")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise RnnlmError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "give torchrun --nproc-per-node at most the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout()), **kwargs)
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a command), so NCCL frees its resources before exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _tensor_device() -> torch.device:
    """Where collective tensors live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Sequence[float]) -> list[float]:
    """The element-wise sum of ``values`` over every rank (float64); ``values`` itself without a group."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(t)
    return t.tolist()


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, differentiably (the gradient is summed back): for statistics of the whole
    global batch inside a forward, such as batch normalization's. ``t`` itself without a group."""
    if not active():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and hand its result to every rank; an RnnlmError it raises is raised on every rank,
    so that a bad setting found by rank 0 alone (an --out that holds a run) stops all ranks with one message."""
    if not active():
        return fn()
    result: tuple[str, Any]
    if is_main():
        try:
            result = ("ok", fn())
        except RnnlmError as e:
            result = ("error", e)
    else:
        result = ("none", None)
    kind, value = broadcast(result)
    if kind == "error":
        raise value
    return value


def barrier() -> None:
    """Wait until every rank gets here: after rank 0 writes files that the others read next (a run's checkpoints,
    read back by ``load`` or a resume)."""
    if active():
        dist.barrier()


def main_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0 (or a single process); on the other ranks a log that drops its lines: rank 0 speaks for
    the run."""
    return log if is_main() else _drop


def _drop(msg: str) -> None:
    pass


def block(n: int, r: int | None = None, size: int | None = None) -> slice:
    """Rank ``r``'s contiguous block of ``n`` things (rows, streams, items): blocks in rank order, sizes differing
    by at most one, the last rank's block ending at ``n``."""
    r = rank() if r is None else r
    size = world_size() if size is None else size
    return slice(r * n // size, (r + 1) * n // size)


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank died or stopped answering."""
    if not active():
        return False
    if isinstance(e, dist.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset", "Timed out", "timed out", "Gloo")
    )
