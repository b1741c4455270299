"""The language-model task: next-token prediction over a corpus, with the state handled per sampling.

Two ways to feed minibatches (see data/batching.py), each with its own state handling:
  * random sampling: windows are unrelated, so every batch starts from a zero state;
  * sequential partitioning: row b of batch i+1 continues row b of batch i, so the final state
    is carried over, detached from the graph so that backpropagation stops at the batch edge
    (truncated BPTT) instead of reaching back to the start of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from rnnlm.lm.config import LMEvalConfig, LMTrainConfig
from rnnlm.lm.data.batching import BatchSampler
from rnnlm.lm.data.dataset import Corpus
from rnnlm.lm.evaluate import score
from rnnlm.lm.generate import generate_ids
from rnnlm.recurrent.state import State, detach_state
from rnnlm.training import distributed
from rnnlm.training.metrics import summarize
from rnnlm.training.task import Task

Batch = tuple[torch.Tensor, torch.Tensor]  # X, Y: (B, T) token ids; Y is X shifted by one


def default_prefixes(corpus: Corpus) -> list[str]:
    """A prefix taken from the start of the training text, so it is always in the vocabulary."""
    n = 3 if corpus.level == "word" else 12
    text = corpus.vocab.decode(corpus.train[:n])
    return [text.split("\n")[0] or text]


class LanguageModelTask(Task):
    """Batches, loss and held-out metrics for a language model on ``corpus``."""

    unit = "tok"
    fixed_shapes = True  # every batch is (batch_size, seq_len): a CUDA graph can replay the step
    shards_evaluation = True  # under torchrun each rank scores its block of the validation streams

    def __init__(self, corpus: Corpus, tc: LMTrainConfig, ec: LMEvalConfig, device: torch.device) -> None:
        self.corpus, self.tc, self.ec, self.device = corpus, tc, ec, device
        # Epoch-end lines (and samples) reach the console every --pred-period epochs, as the d2l recipe prints.
        self.report_period = tc.pred_period or 1
        self.shard = (distributed.rank(), distributed.world_size())  # --batch-size is the global batch
        self.sampler = BatchSampler(
            corpus.train,
            tc.batch_size,
            tc.seq_len,
            tc.sampling,
            tc.random_offset,
            tc.seed,
            tc.variable_len,
            shard=self.shard,
        )
        self.carry: State | None = None  # the state carried between sequential batches

    @property
    def carries_state(self) -> bool:
        """Whether ``carry`` (the state handed from one batch to the next) is read by ``loss``."""
        return self.sampler.carries_state

    def num_batches(self, epoch: int) -> int:
        return self.sampler.num_batches(epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        if start == 0:
            self.carry = None  # each epoch's streams start from a zero state
        for X, Y in self.sampler.batches(epoch, start=start):
            yield X.to(self.device), Y.to(self.device)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The mean cross-entropy and the number of targets; with AR/TAR the objective to minimise, the
        count, and the cross-entropy alone (what is logged)."""
        X, Y = batch
        state = self.carry if self.sampler.carries_state else None  # random sampling: a fresh zero state
        outputs, state = model.encode(X, state)  # (B, T, H)
        loss = model.head.loss(outputs, Y)
        if self.sampler.carries_state:
            self.carry = detach_state(state)
        if not (self.tc.ar or self.tc.tar):
            return loss, Y.numel()
        objective = loss
        if self.tc.ar:  # AR: keep the activations small
            objective = objective + self.tc.ar * outputs.pow(2).mean()
        if self.tc.tar and outputs.shape[1] > 1:  # TAR: keep them from jumping between steps
            objective = objective + self.tc.tar * (outputs[:, 1:] - outputs[:, :-1]).pow(2).mean()
        return objective, Y.numel(), loss.detach()

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Loss, perplexity and bits per token over the validation text under --eval-protocol (empty without one)."""
        if self.corpus.val is None or len(self.corpus.val) < 2:
            return {}
        nll = score(model, self.corpus.val, self.ec, shard=self.shard)
        total, count = distributed.all_sum(nll)  # several ranks: each scored its block of the streams
        val = summarize(total, int(count))
        return {"val_loss": val["loss"], "val_ppl": val["ppl"], "val_bpc": val["bpt"]}

    def summary(self, m: dict[str, Any]) -> str:
        line = f"train ppl {m['train_ppl']:.4f}"
        if "val_ppl" in m:
            line += f" | val ppl {m['val_ppl']:.4f} | val bpc {m['val_bpc']:.4f}"
        return line

    def callbacks(self) -> list[Any]:
        tc = self.tc
        if not tc.pred_period:
            return []
        return [SampleText(self.corpus, tc.prefixes or default_prefixes(self.corpus), tc)]

    def state_dict(self) -> dict[str, Any]:
        return {"carry": None if self.carry is None else [s.cpu() for s in self.carry]}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.carry = None if d["carry"] is None else tuple(s.to(self.device) for s in d["carry"])


class SampleText:
    """Every ``pred_period`` epochs, print a continuation of each prefix (the d2l recipe's samples)."""

    def __init__(self, corpus: Corpus, prefixes: list[str], tc: LMTrainConfig) -> None:
        self.vocab, self.prefixes, self.tc = corpus.vocab, prefixes, tc
        for p in prefixes:  # fail now, not after an hour of training
            self.vocab.encode(p)

    def on_epoch_end(self, trainer: Any) -> None:
        if not trainer.report_due(epoch_end=True) or not distributed.is_main():
            return
        # Samples draw from their own generator: printing them must not move the training RNG,
        # or a resumed run would differ from one trained straight through.
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + trainer.epoch)
        for prefix in self.prefixes:
            ids = self.vocab.encode(prefix).tolist()
            steps = generate_ids(
                trainer.model, ids, self.tc.pred_len, temperature=self.tc.pred_temperature, generator=gen
            )
            trainer.log(" - " + prefix + self.vocab.decode_after(ids[-1], [int(t[0]) for t in steps]))
