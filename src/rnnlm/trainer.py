"""The training loop: forward, loss, backward, clip, step; with logging, samples and checkpoints.

Two ways to feed minibatches (see data/batching.py), each with its own state handling:
  * random sampling: windows are unrelated, so every batch starts from a zero state;
  * sequential partitioning: row b of batch i+1 continues row b of batch i, so the final state
    is carried over, detached from the graph so that backpropagation stops at the batch edge
    (truncated BPTT) instead of reaching back to the start of the epoch.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint as ckpt
from . import runs
from .atomic import atomic_write_json
from .config import RunConfig
from .data import BatchSampler, Corpus, Vocab, load_corpus
from .errors import TrainingError
from .evaluate import evaluate, summarize
from .generate import generate_ids
from .models import RNNLM, count_parameters, detach_state
from .optim import build_optimizer, lr_at


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    model: RNNLM
    vocab: Vocab
    config: RunConfig
    metrics: dict[str, Any]  # the last line written to metrics.jsonl


class _Interrupt:
    """First Ctrl-C asks the loop to stop at the next step boundary and save; a second one aborts."""

    def __init__(self, say: Callable[[str], None]):
        self.requested = False
        self._say = say
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("interrupted: finishing this step and saving the last checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def default_prefixes(corpus: Corpus) -> list[str]:
    """A prefix taken from the start of the training text, so it is always in the vocabulary."""
    n = 3 if corpus.level == "word" else 12
    text = corpus.vocab.decode(corpus.train[:n])
    return [text.split("\n")[0] or text]


class Trainer:
    """Owns the model, optimizer, sampler and run directory of one training run."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        corpus: Corpus,
        resume_state: dict[str, Any] | None,
        log: Callable[[str], None],
    ):
        self.cfg, self.tc, self.run_dir, self.corpus = cfg, cfg.train, run_dir, corpus
        self.device = runs.resolve_device(self.tc.device)
        self.log = self.user_log = log  # run() routes self.log around its progress bar
        torch.manual_seed(self.tc.seed)
        self.model = runs.build_model(cfg, corpus.vocab).to(self.device)
        self.optimizer = build_optimizer(self.model, self.tc)
        self.sampler = BatchSampler(
            corpus.train, self.tc.batch_size, self.tc.seq_len, self.tc.sampling, self.tc.random_offset, self.tc.seed
        )
        self.prefixes = self.tc.prefixes or default_prefixes(corpus)
        for p in self.prefixes:  # fail now, not after an hour of training
            corpus.vocab.encode(p)
        # Position and running sums; all of it is saved so that a resume continues exactly.
        self.step = self.epoch = self.batch = 0
        self.elapsed_before = 0.0  # seconds spent in earlier sessions of this run (before a resume)
        self._wall0 = self._mark = time.perf_counter()
        self.best_val = math.inf
        self.epoch_sum = self.epoch_tokens = 0.0
        self.carry: tuple[torch.Tensor, ...] | None = None
        self.last_metrics: dict[str, Any] = {}
        self.saved_step, self.saved_at = -1, -math.inf  # when `last` was written
        if resume_state is not None:
            self._restore(resume_state)
        self._reset_interval()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _reset_interval(self) -> None:
        self.int_sum = self.int_tokens = 0.0
        self.int_train_time = 0.0

    def _total_steps(self) -> int | None:
        """Steps the run will take, when bounded by epochs or max_steps (for cosine and the bar)."""
        by_epochs = self.tc.epochs * self.sampler.num_batches(0) if self.tc.epochs else None
        bounds = [b for b in (by_epochs, self.tc.max_steps) if b]
        return min(bounds) if bounds else None

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self._wall0

    def finished(self) -> bool:
        tc = self.tc
        return bool(
            (tc.epochs is not None and self.epoch >= tc.epochs)
            or (tc.max_steps is not None and self.step >= tc.max_steps)
            or (tc.time_budget is not None and self.elapsed() >= tc.time_budget)
        )

    # -- one optimizer step ----------------------------------------------------------------------
    def _train_step(self, X: torch.Tensor, Y: torch.Tensor, lr: float) -> float:
        state = self.carry if self.sampler.carries_state else None  # random sampling: fresh zero state
        logits, state = self.model(X, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), Y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.tc.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.sampler.carries_state:
            self.carry = detach_state(state)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at step {self.step + 1} (epoch {self.epoch + 1}) with lr {lr:g}. "
                f"Try a lower --lr, gradient clipping (--clip, now {self.tc.clip:g}) or --optimizer adamw; "
                f"the last good checkpoint is {self.run_dir / ckpt.LAST} (if one was saved)."
            )
        return value

    def run(self) -> TrainResult:
        """Train until a stop condition holds; save on the way out, also on Ctrl-C."""
        total = self._total_steps()
        show = self.tc.progress and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.step, disable=not show, unit="step", dynamic_ncols=True, leave=False)

        def say(msg: str) -> None:  # the caller's log, without tearing the progress bar
            with bar.external_write_mode():
                self.user_log(msg)

        self.log = say
        self._wall0 = self._mark = time.perf_counter()
        lr = lr_at(self.tc, self.step, total, self.elapsed())
        with _Interrupt(say) as interrupt:
            while not self.finished():
                nb = self.sampler.num_batches(self.epoch)
                if self.batch == 0:
                    self.carry = None  # each epoch's streams start from a zero state
                for X, Y in self.sampler.batches(self.epoch, start=self.batch):
                    lr = lr_at(self.tc, self.step, total, self.elapsed())
                    loss = self._train_step(X.to(self.device), Y.to(self.device), lr)
                    tokens = X.numel()
                    self.step += 1
                    self.batch += 1
                    self.epoch_sum += loss * tokens
                    self.epoch_tokens += tokens
                    self.int_sum += loss * tokens
                    self.int_tokens += tokens
                    now = time.perf_counter()
                    self.int_train_time += now - self._mark  # batch and step only, for tokens_per_s
                    self._mark = now
                    bar.update(1)
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.3f}", refresh=False)
                    if self.tc.log_every and self.step % self.tc.log_every == 0:
                        self._log_point(lr)
                        self._save_last()
                        self._mark = time.perf_counter()
                    if interrupt.requested:
                        if self.int_tokens:
                            self._log_point(lr)
                        self._save_last(force=True)
                        bar.close()
                        raise KeyboardInterrupt(
                            f"saved {self.run_dir / ckpt.LAST} at step {self.step}; "
                            f"continue with: rnnlm train --resume {self.run_dir}"
                        )
                    if self.finished():
                        break
                if self.batch >= nb:  # epoch complete
                    self.epoch += 1
                    self.batch = 0
                    if not self.tc.log_every or self.step % self.tc.log_every:
                        self._log_point(lr, epoch_end=True)
                    self.epoch_sum = self.epoch_tokens = 0.0  # before saving: a resume starts a fresh epoch
                    self._save_last()
                    if self.tc.pred_period and self.epoch % self.tc.pred_period == 0:
                        self._print_samples()
                    self._mark = time.perf_counter()
                elif self.finished() and self.int_tokens:
                    self._log_point(lr)
        self._save_last(force=True)
        bar.close()
        return TrainResult(self.run_dir, self.model, self.corpus.vocab, self.cfg, self.last_metrics)

    # -- logging, samples, checkpoints ------------------------------------------------------------
    def _log_point(self, lr: float, epoch_end: bool = False) -> None:
        """Evaluate, append a metrics line, print a summary and save the best weights."""
        # Per-epoch lines report the whole epoch's loss, as the d2l recipe does (also across a resume);
        # with --log-every every line reports the steps since the previous line.
        per_epoch = epoch_end and not self.tc.log_every
        s, n = (self.epoch_sum, self.epoch_tokens) if per_epoch else (self.int_sum, self.int_tokens)
        train = summarize(s, int(n))
        m: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch_progress(),
            "elapsed_s": round(self.elapsed(), 3),
            "lr": lr,
            "tokens_per_s": round(self.int_tokens / max(self.int_train_time, 1e-9), 1),
            "train_loss": train["loss"],
            "train_ppl": train["ppl"],
        }
        if self.corpus.val is not None and len(self.corpus.val) > 1:
            val = summarize(*evaluate(self.model, self.corpus.val, self.tc.eval_batch_size, self.tc.seq_len * 4))
            m.update(val_loss=val["loss"], val_ppl=val["ppl"], val_bpc=val["bpt"])
        with open(self.run_dir / ckpt.METRICS, "a", encoding="utf-8") as f:
            # Strict JSON: an overflowed perplexity is written as null, not as the non-standard Infinity.
            f.write(
                json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in m.items()})
                + "\n"
            )
        self.last_metrics = m
        line = f"epoch {m['epoch']} | step {self.step} | lr {lr:.3g} | train ppl {m['train_ppl']:.4f}"
        if "val_ppl" in m:
            line += f" | val ppl {m['val_ppl']:.4f} | val bpc {m['val_bpc']:.4f}"
        line += f" | {m['tokens_per_s']:.0f} tok/s | {m['elapsed_s']:.1f} s"
        if not epoch_end or not self.tc.pred_period or self.epoch % self.tc.pred_period == 0 or self.finished():
            self.log(line)
        if "val_loss" in m and m["val_loss"] < self.best_val:
            self.best_val = m["val_loss"]
            meta = {"step": self.step, "epoch": m["epoch"], "val_loss": m["val_loss"]}
            ckpt.save_weights(self.run_dir / ckpt.BEST, self.model.state_dict(), meta)
        self._reset_interval()

    def epoch_progress(self) -> float | int:
        """Epochs done: a whole number at an epoch's end, else with the fraction of the current one."""
        if self.batch == 0:
            return self.epoch
        return round(self.epoch + self.batch / max(self.sampler.num_batches(self.epoch), 1), 4)

    def _print_samples(self) -> None:
        # Samples draw from their own generator: printing them must not move the training RNG,
        # or a resumed run would differ from one trained straight through.
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + self.epoch)
        for prefix in self.prefixes:
            ids = self.corpus.vocab.encode(prefix).tolist()
            steps = generate_ids(self.model, ids, self.tc.pred_len, temperature=self.tc.pred_temperature, generator=gen)
            out = [int(t[0]) for t in steps]
            self.log(" - " + prefix + self.corpus.vocab.decode_after(ids[-1], out))

    def _save_last(self, force: bool = False) -> None:
        """Save what an exact resume needs; throttled to --save-every seconds unless forced."""
        now = time.monotonic()
        if self.saved_step == self.step or (not force and now - self.saved_at < self.tc.save_every):
            return
        # State first, then weights: on resume the two must name the same step, or the pair is rejected.
        ckpt.save_state(self.run_dir / ckpt.LAST_STATE, self._state())
        meta = {"step": self.step, "epoch": self.epoch_progress()}
        ckpt.save_weights(self.run_dir / ckpt.LAST, self.model.state_dict(), meta)
        self.saved_step, self.saved_at = self.step, now

    def _state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "elapsed": self.elapsed(),
            "best_val": self.best_val,
            "epoch_sum": self.epoch_sum,
            "epoch_tokens": self.epoch_tokens,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "carry": None if self.carry is None else [s.cpu() for s in self.carry],
            "last_metrics": self.last_metrics,
        }

    def _restore(self, st: dict[str, Any]) -> None:
        weights, meta = ckpt.load_weights(self.run_dir / ckpt.LAST)
        if str(st["step"]) != meta.get("step"):
            raise TrainingError(
                f"{self.run_dir}: {ckpt.LAST} (step {meta.get('step')}) and {ckpt.LAST_STATE} "
                f"(step {st['step']}) disagree, so the last save was cut short and an exact resume is "
                f"impossible; start a new run, or use the weights for eval/generate as they are."
            )
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(st["optimizer"])
        self.step, self.epoch, self.batch = st["step"], st["epoch"], st["batch"]
        self.saved_step = self.step
        self.elapsed_before, self.best_val = st["elapsed"], st["best_val"]
        # After a hard crash `best` can be newer than the saved state: never replace it with a worse model.
        if (self.run_dir / ckpt.BEST).is_file():
            best_meta = ckpt.load_weights(self.run_dir / ckpt.BEST)[1]
            self.best_val = min(self.best_val, float(best_meta.get("val_loss", math.inf)))
        dropped = ckpt.truncate_metrics(self.run_dir, self.step)
        if dropped:
            self.log(f"resume: dropped {dropped} metrics line(s) logged after the last save (step {self.step})")
        self.epoch_sum, self.epoch_tokens = st["epoch_sum"], st["epoch_tokens"]
        self.last_metrics = st.get("last_metrics", {})
        self.carry = None if st["carry"] is None else tuple(s.to(self.device) for s in st["carry"])
        torch.set_rng_state(st["rng"]["torch"])
        if "cuda" in st["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng"]["cuda"], self.device)


def train(cfg: RunConfig, resume: str | Path | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train a model as cfg says (a new run), or continue the run in `resume` exactly where it stopped.

    For a resume, cfg must equal the run's saved config except for the fields in runs.RESUMABLE
    (use runs.merge_resume to build it).
    """
    if resume is not None:
        run_dir = Path(resume)
        saved, vocab = runs.read_run(run_dir)
        runs.check_resume(saved, cfg)
        state = ckpt.load_state(run_dir / ckpt.LAST_STATE)
        corpus = load_corpus(saved.data, vocab)
        cfg.data = saved.data
        cfg.train.out = str(run_dir)
    else:
        corpus = load_corpus(cfg.data)
        cfg.data.level = corpus.level
        # Absolute paths in config.json, so that `--resume` and `rnnlm eval` work from any directory.
        for field in ("paths", "val_paths", "test_paths"):
            setattr(cfg.data, field, [str(Path(p).expanduser().absolute()) for p in getattr(cfg.data, field)])
        run_dir = runs.new_run_dir(cfg.train.out)
        cfg.train.out = str(run_dir)
        state = None
    trainer = Trainer(cfg, run_dir, corpus, state, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / ckpt.CONFIG, cfg.to_dict())  # on a resume: the new limits
    if resume is None:
        corpus.vocab.save(run_dir / ckpt.VOCAB)
    m = cfg.model
    val = f"{len(corpus.val):,}" if corpus.val is not None else "none"
    log(
        f"data: {corpus.description} | {corpus.level} level, vocab {len(corpus.vocab):,} | "
        f"train {len(corpus.train):,} tokens, val {val}"
    )
    log(
        f"model: {m.impl} {m.cell}, {m.layers} x {m.hidden}, embed {m.embed or 'one-hot'} | "
        f"{count_parameters(trainer.model):,} parameters | device {trainer.device} | run {run_dir}"
        + (f" (resumed at step {trainer.step})" if resume is not None else "")
    )
    if resume is not None and trainer.finished():
        tc = cfg.train
        log(
            f"nothing to do: the run is at step {trainer.step}, epoch {trainer.epoch_progress()}, which already "
            f"meets its limits (--epochs {tc.epochs}, --max-steps {tc.max_steps}, --time-budget {tc.time_budget}); "
            f"raise one of them (or pass none) to train further"
        )
    return trainer.run()
