"""Ensembles, written once for every use: where members train, when one has finished, their seeds, and the worker
processes that train several at a time.

An ensemble run (or a frame run with a refit) trains each member in its own run directory ``RUN/members/<i>``
(a frame member's refit in ``members/<i>/refit``) with the standard callbacks, and saves the members together in
``RUN/model.safetensors`` (every member's weights under ``members.<i>.``), which ``runs.checkpoint_path`` names
for best and last. A resume trains only the members that have not finished.

**Finished** has one rule: a member that stopped on its own (its limits, early stopping; not Ctrl-C, not a
failure) writes ``finished.json`` (atomically) in its directory. Frame runs made before that marker existed
trained their members one after another in one process, so there a member had finished when the next one
began or the final model exists; ``is_finished`` reads that as a fallback where the caller names the next.

**Workers** (taggers, ``--jobs``): each member trains in a spawned process. Whatever ends the run early (Ctrl-C,
which a terminal sends to every process and Jupyter or ``kill -INT`` to the parent alone; a member that fails),
every member is asked to stop through an event that a watcher thread in each worker listens to (it also stops
the member when the parent process is gone); the member then saves its last checkpoint at its next step.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.training.runs import MEMBERS, MODEL, resume_checkpoint
from rnnlm.training.trainer import INTERRUPTED

FINISHED = "finished.json"  # in a member's directory once it stopped on its own


def member_seed(seed: int, member: int) -> int:
    """The seed of an ensemble's member: member 0 trains with the run's seed, member i > 0 with a seed drawn
    from (seed, i), so that the members of runs with neighbouring seeds (a benchmark's 0..4) never coincide."""
    return seed if member == 0 else int(np.random.SeedSequence([seed, member]).generate_state(1)[0])


def member_dirs(run_dir: Path, count: int) -> list[Path]:
    """Where each of an ensemble run's ``count`` members trains."""
    return [run_dir / MEMBERS / str(i) for i in range(count)]


def is_finished(where: Path, legacy_next: Path | None = None) -> bool:
    """Whether the member in ``where`` had finished: its finished.json, or, for the frame runs made before the
    marker existed, ``legacy_next`` existing (the next member's folder, or the final model): their members
    trained one after another in one process, so the next one began only once this one had finished."""
    if (where / FINISHED).is_file():
        return True
    return legacy_next is not None and legacy_next.exists()


def mark_finished(where: Path, reason: str) -> None:
    """Record that the member in ``where`` stopped on its own (``reason``: its stop reason)."""
    atomic_write_json(where / FINISHED, {"reason": reason})


def has_final_model(run_dir: Path) -> bool:
    """Whether an ensemble run has finished: its members saved together in model.safetensors."""
    return (run_dir / MODEL).is_file()


def member_start(where: Path, resuming: bool) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """The weights and trainer state a member continues from on a resume (its last checkpoint), or (None, None)
    for a member that starts anew; metrics it logged before a crash that saved no checkpoint are dropped."""
    if resuming and (where / ckpt.LAST).is_file():
        return resume_checkpoint(where)
    if resuming:
        ckpt.truncate_metrics(where, 0)
    return None, None


def save_final(run_dir: Path, model: torch.nn.Module, meta: dict[str, Any], log: Callable[[str], None]) -> None:
    """Save the members together as the run's model.safetensors (the run has then finished)."""
    ckpt.save_weights(run_dir / MODEL, model.state_dict(), meta)
    log(f"saved {run_dir / MODEL}")


# -- members asked to stop --------------------------------------------------------------------------------

# Set in a worker process once the run asks its members to stop (see _watch); never cleared.
_stop_asked = threading.Event()


class StopWhenAsked:
    """A member's callback: once the run asks its members to stop, stop as Ctrl-C would, so that the member saves
    its last checkpoint. It looks at every step, so a member that was still setting up when the request came
    stops after its first step: none escapes. (It asks the trainer directly rather than sending SIGINT, since a
    member that a terminal's Ctrl-C reached already would take a second SIGINT as "abort".)"""

    def on_step(self, trainer: Any, loss: float, count: int) -> None:
        if _stop_asked.is_set() and trainer.stop_reason is None:
            trainer.log("asked to stop by the ensemble run: finishing this step and saving the last checkpoint")
            trainer.request_stop(INTERRUPTED)


def train_member(name: str, where: Path, run_dir: Path, command: str, train: Callable[[Sequence[Any]], str]) -> str:
    """Train one member with ``train(extra_callbacks)`` (which trains it through runs.train_model and returns why it
    stopped); a member that stops on its own is marked finished. A member taken up after the run asked its members
    to stop does not begin; one that is interrupted says where it saved and how to resume the whole run."""
    if _stop_asked.is_set():
        raise KeyboardInterrupt(f"{name}: not begun")
    try:
        reason = train([StopWhenAsked()])
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"{name}: saved {where / ckpt.LAST}; continue with: {command} --resume {run_dir}"
        ) from None
    mark_finished(where, reason)
    return reason


# -- members trained side by side, in worker processes ----------------------------------------------------


class MemberJob(Protocol):
    """What the parallel machinery reads of a member's job: its name and directory."""

    name: str
    run_dir: Path


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ensemble_plan(ensemble: int, jobs: int, threads: int, device: torch.device, cores: int) -> tuple[int, int, int]:
    """How an ensemble trains: (members at a time, each member's --threads, the torch thread count that each
    worker process starts with, 0 = torch's default).

    ``--threads`` means for each member what it means for one model: the CPU threads of a training step (0
    torch's default, N, -1 timed); ``--jobs`` is how many members train at once. ``--jobs 0`` trains as many
    as the cores hold: one per core, or one per ``--threads`` cores when that is a count; one at a time on a
    GPU. Members side by side share the cores: with ``--threads 0`` each gets an even share, and with -1 the
    share is each worker's default, which the member times one thread against.
    """
    if jobs:
        parallel = jobs
    elif device.type != "cpu":
        parallel = 1
    else:
        parallel = cores // threads if threads > 0 else cores
    parallel = max(1, min(parallel, ensemble))
    if parallel == 1:
        return 1, threads, 0
    share = max(1, cores // parallel)
    return parallel, threads or share, threads if threads > 0 else share


def threads_text(parallel: int, threads: int, worker: int, cores: int) -> str:
    """How the members of an ensemble use the CPU, for its log line."""
    each = " each" if parallel > 1 else ""
    default = worker or torch.get_num_threads()
    if threads == -1 and default > 1:
        return f" with 1 or {default} thread(s){each}, timed (--threads -1)"
    if threads == 0:
        return f" with torch's default of {default} thread(s){each}"
    used = max(threads, 1)
    over = f" (more threads than the {cores} cores)" if parallel * used > cores else ""
    return f" with {used} thread(s){each}{over}"


def train_in_workers(
    todo: Sequence[MemberJob], parallel: int, run_dir: Path, command: str, train: Callable[[Any], str]
) -> None:
    """Train the members in ``parallel`` worker processes (spawned: no forked torch state), each with
    ``train(job)`` (a module-level function, so that it pickles; it trains through ``train_member``).

    Whatever ends the wait early (Ctrl-C, which a terminal sends to every process and Jupyter or ``kill -INT``
    to this one alone; a member that fails or is interrupted), every member is asked to stop: those training
    save their last checkpoints and stop, those not begun are cancelled. Then the error is raised; after an
    interrupt its message says where each member stands, as read from its directory.
    """
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with ProcessPoolExecutor(parallel, mp_context=ctx, initializer=_worker_init, initargs=(stop, os.getpid())) as pool:
        futures = [pool.submit(train, member) for member in todo]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in [*done, *futures]:  # a failure first, without waiting for the others
                future.result()
        except BaseException as e:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(
                    f"{where_members_stand(todo)}; continue with: {command} --resume {run_dir}"
                ) from None
            raise


def where_members_stand(todo: Sequence[MemberJob]) -> str:
    """Each member's state after an interrupted ensemble, read from its directory (so that it is true)."""
    parts = []
    for job in todo:
        last = job.run_dir / ckpt.LAST
        if is_finished(job.run_dir):
            parts.append(f"{job.name} finished")
        elif last.is_file():
            step = ckpt.load_weights(last)[1].get("step", "?")
            parts.append(f"{job.name} saved {last} at step {step}")
        else:
            parts.append(f"{job.name} has saved nothing yet")
    return "; ".join(parts)


def _worker_init(stop: Any, parent: int) -> None:
    """Start an ensemble's worker process: a terminal's Ctrl-C is ignored outside training (in training the trainer
    handles it; either way the run asks every member to stop), and ``_watch`` listens for the run."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(stop, parent)


def _watch(stop: Any, parent: int, every: float = 1.0) -> None:
    """In a worker: once ``stop`` is set, or the parent process is gone (killed without a Ctrl-C, which would
    leave the worker training for nobody), set ``_stop_asked``: the member training now, or later, saves and stops
    (see StopWhenAsked and train_member)."""

    def listen() -> None:
        while not stop.wait(every) and os.getppid() == parent:
            pass
        _stop_asked.set()

    threading.Thread(target=listen, daemon=True).start()
