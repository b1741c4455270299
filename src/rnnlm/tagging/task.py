"""The tagging task: sentences in length-bucketed batches, the head's loss, and dev-set scores.

The held-out scores are token accuracy and, for chunk tags (NER), entity-level precision, recall and
F1; the task asks the trainer to keep the weights with the best of them (``monitor``), since a lower
dev loss need not mean better tags. ``predict`` and ``score`` are shared with the API and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnlm.tagging import schemes as tagschemes
from rnnlm.tagging.config import TagTrainConfig
from rnnlm.tagging.encoding import (
    EncodedSentence,
    LengthBatcher,
    TagBatch,
    TagEncoder,
    collate,
    replace_rare,
    singletons,
    sorted_batches,
)
from rnnlm.tagging.metrics import entity_scores, token_accuracy
from rnnlm.training import distributed
from rnnlm.training.task import Task


@dataclass
class TagSchemes:
    """How the model's tags relate to the file's: ``file`` is "none" for plain tags (part of speech)."""

    file: str
    model: str  # the scheme the tag set is in; equals file for plain tags

    @property
    def chunked(self) -> bool:
        return self.file != "none"

    def to_model(self, tags: Sequence[str]) -> list[str]:
        """Gold tags (valid in the file's scheme) in the model's scheme."""
        return list(tags) if not self.chunked else tagschemes.convert(tags, self.file, self.model)

    def to_file(self, tags: Sequence[str]) -> list[str]:
        """Predicted tags (possibly ill-formed) as valid tags of the file's scheme."""
        return list(tags) if not self.chunked else tagschemes.coerce(tags, self.file)


def predict(
    model: torch.nn.Module, sentences: Sequence[EncodedSentence], batch_size: int, device: torch.device
) -> tuple[list[list[int]], float, int]:
    """Predicted tag ids of every sentence, the summed loss over the known gold tags, and how many tokens have
    one (0 when no gold is given). A gold tag outside the tag set is left out of the loss (by the CRF head,
    its whole sentence), so with such tags the loss per token comes out a little low."""
    model.eval()
    out: list[list[int]] = [[] for _ in sentences]
    loss, counted = 0.0, 0
    with torch.no_grad():
        for index in sorted_batches([len(s.words) for s in sentences], batch_size):
            batch = collate(sentences, index.tolist()).to(device)
            scores = model(batch.words, batch.chars, batch.lengths, batch.lm)  # (B, T, K)
            mask = batch.mask
            for i, row, n in zip(batch.index, model.decode(scores, mask).tolist(), batch.lengths.tolist(), strict=True):
                out[i] = row[:n]
            gold = batch.tags >= 0
            if bool(gold.any()):
                loss += float(model.loss(scores, batch.tags, mask))
                counted += int((gold & mask).sum())
    return out, loss, counted


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], chunked: bool) -> dict[str, Any]:
    """Token accuracy, and for chunk tags entity precision/recall/F1 overall and per type (in percent)."""
    result: dict[str, Any] = {
        "sentences": len(gold),
        "tokens": sum(map(len, gold)),
        "accuracy": 100 * token_accuracy(gold, pred),
    }
    if chunked:
        e = entity_scores(gold, pred)
        result.update(precision=100 * e.overall.precision, recall=100 * e.overall.recall, f1=100 * e.overall.f1)
        result["per_type"] = {
            t: {"precision": 100 * s.precision, "recall": 100 * s.recall, "f1": 100 * s.f1, "support": s.support}
            for t, s in e.per_type.items()
        }
    return result


class TaggingTask(Task):
    """Batches, loss and dev-set scores for a tagger."""

    unit = "tok"

    def __init__(
        self,
        encoder: TagEncoder,
        train: Sequence[EncodedSentence],
        dev: Sequence[EncodedSentence] | None,
        dev_gold: Sequence[Sequence[str]] | None,
        schemes: TagSchemes,
        tc: TagTrainConfig,
        eval_batch_size: int,
        device: torch.device,
    ) -> None:
        self.encoder, self.train, self.dev, self.dev_gold = encoder, train, dev, dev_gold
        self.schemes, self.tc, self.eval_batch_size, self.device = schemes, tc, eval_batch_size, device
        self.batcher = LengthBatcher([len(s.words) for s in train], tc.batch_size, tc.seed)
        self.rare = singletons(train, len(encoder.words))
        self.monitor = ("val_f1", "max") if schemes.chunked else ("val_acc", "max")
        self.shards_evaluation = True
        self._epoch: tuple[int, list[np.ndarray]] | None = None  # the last epoch's batches, this rank's share

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The sentence indices of each of this rank's batches in ``epoch``. Under torchrun rank r takes every
        world-th sentence of each global batch (sorted by length, so the ranks' shares are alike in length); a
        batch with fewer sentences than ranks (the odd last one of a pool) is left out, on every rank alike, rather
        than padded with repeats as DistributedSampler does."""
        if self._epoch is None or self._epoch[0] != epoch:
            rank, world = distributed.rank(), distributed.world_size()
            batches = self.batcher.epoch(epoch)
            if world > 1:
                batches = [b[rank::world] for b in batches if len(b) >= world]
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def num_batches(self, epoch: int) -> int:
        if distributed.world_size() > 1:
            return len(self.epoch_batches(epoch))
        return self.batcher.num_batches()

    def batches(self, epoch: int, start: int = 0) -> Iterator[TagBatch]:
        for i, index in enumerate(self.epoch_batches(epoch)[start:], start):
            batch = collate(self.train, index.tolist())
            if self.tc.unk_singletons > 0:  # drawn from (seed, epoch, batch), so a resume replays the same words
                rng = np.random.default_rng([self.tc.seed, epoch, i])
                batch.words = replace_rare(batch.words, self.rare, self.tc.unk_singletons, self.encoder.unk_word, rng)
            yield batch.to(self.device)

    def loss(self, model: torch.nn.Module, batch: TagBatch) -> tuple[torch.Tensor, int]:
        """Loss per token: the CRF's sentence losses are summed and divided by the tokens, like the softmax's;
        with a second column (--aux-column) its head's summed cross-entropy joins, times --aux-weight."""
        mask = batch.mask
        count = int(mask.sum())
        if batch.aux is None:
            scores = model(batch.words, batch.chars, batch.lengths, batch.lm)  # (B, T, K)
            return model.loss(scores, batch.tags, mask) / count, count
        scores, aux = model.forward_both(batch.words, batch.chars, batch.lengths, batch.lm)
        loss = model.loss(scores, batch.tags, mask) + self.tc.aux_weight * model.aux_head.loss(aux, batch.aux, mask)
        return loss / count, count

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Dev loss per token, token accuracy and (chunk tags) entity F1, in percent; empty without a dev set."""
        if not self.dev:
            return {}
        # Under torchrun each rank tags its block of the sentences; the tags are gathered in order, the losses summed.
        mine = predict(model, self.dev[distributed.block(len(self.dev))], self.eval_batch_size, self.device)
        parts = distributed.gather(mine)
        ids = [row for part in parts for row in part[0]]
        loss, counted = sum(p[1] for p in parts), sum(p[2] for p in parts)
        pred = [self.schemes.to_file(self.encoder.tags.decode(row)) for row in ids]
        s = score(self.dev_gold, pred, self.schemes.chunked)
        m = {"val_loss": loss / max(counted, 1), "val_acc": s["accuracy"]}
        if self.schemes.chunked:
            m["val_f1"] = s["f1"]
        return m

    def summary(self, m: dict[str, Any]) -> str:
        line = f"train loss {m['train_loss']:.4f}"
        if "val_loss" in m:
            line += f" | dev loss {m['val_loss']:.4f} | dev acc {m['val_acc']:.2f}"
        if "val_f1" in m:
            line += f" | dev F1 {m['val_f1']:.2f}"
        return line

    def callbacks(self) -> list[Any]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}  # the batch order depends only on (seed, epoch)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        pass
