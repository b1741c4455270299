"""The sequence tagger: word + character input layer -> bidirectional recurrent encoder -> tag head.

Batch-first: words (B, T) ids, chars (B, T, W) ids with 0 as padding, lengths (B,), and with a character
LM (``char_lm``) its features lm (B, T, D); the model returns tag scores (B, T, K). The head turns scores
into a loss and into tags: a softmax head scores each token on its own, a CRF head scores whole tag
sequences and decodes with Viterbi. Padding never changes a sentence's result: the encoder stops at each
length, the character CNN reads each word alone, and the losses and decoders take the mask.
Parameter names, and so the state-dict keys:

    input.words.weight           (V, E)       word embeddings
    input.chars.*                             the character CNN (char_cnn.py), absent with char_dim 0
                                              (character-LM features add no parameter of their own: they
                                              widen encoder.weight_ih_l0 by D columns)
    encoder.weight_ih_l0 ...                  canonical recurrent weights, both directions (recurrent/encoder.py)
    head.weight, head.bias       (K, 2H)      tag scores
    head.crf.transitions ...                  CRF head only (crf.py)
    aux_head.weight, aux_head.bias (K', 2H)   a second column's tag scores, with --aux-column only

A ``TaggerEnsemble`` holds taggers trained with different seeds under ``members.<i>.``; its scores are the
members' mean (CRF emissions, or softmax log-probabilities) and its CRF the members' mean transitions, so
that its Viterbi path is the one with the highest summed sequence score over the members.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlm.recurrent.dropout import Dropout
from rnnlm.recurrent.encoder import RecurrentEncoder
from rnnlm.recurrent.engines import resolve_matmul_dtype
from rnnlm.recurrent.one_sequence import OneSequenceLSTM
from rnnlm.tagging.char_cnn import CharCNN
from rnnlm.tagging.config import TaggerConfig
from rnnlm.tagging.crf import CRF


class WordCharInput(nn.Module):
    """(B, T) word ids and (B, T, W) char ids -> (B, T, E + F): word embedding and spelling vector, with dropout;
    with ``lm_dim`` the (B, T, D) character-LM features join them: (B, T, E + F + D).

    ``word_dropout`` replaces words by ``unk_id`` in training, so that the <unk> embedding is trained
    and the model learns to lean on the spelling of words it has rarely seen.
    """

    def __init__(self, cfg: TaggerConfig, num_words: int, num_chars: int, unk_id: int, lm_dim: int = 0) -> None:
        super().__init__()
        self.lm_dim = lm_dim
        self.words = nn.Embedding(num_words, cfg.word_dim)
        self.chars = None
        if cfg.char_dim:
            self.chars = CharCNN(num_chars, cfg.char_dim, cfg.char_filters, cfg.char_kernel, cfg.char_dropout)
        self.drop = Dropout(cfg.dropout)
        self.word_dropout, self.unk_id = cfg.word_dropout, unk_id
        bound = math.sqrt(3.0 / cfg.word_dim)  # unit variance per vector, spread over its components
        nn.init.uniform_(self.words.weight, -bound, bound)

    @property
    def output_size(self) -> int:
        return self.words.embedding_dim + (self.chars.output_dim if self.chars is not None else 0) + self.lm_dim

    def forward(self, words: Tensor, chars: Tensor, lm: Tensor | None = None) -> Tensor:
        if self.training and self.word_dropout > 0:
            words = words.masked_fill(torch.rand(words.shape, device=words.device) < self.word_dropout, self.unk_id)
        x = self.words(words)  # (B, T, E)
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars)], dim=-1)  # (B, T, E + F)
        if self.lm_dim:
            if lm is None or lm.shape[-1] != self.lm_dim:
                got = "none" if lm is None else f"width {lm.shape[-1]}"
                raise ValueError(f"this tagger reads character-LM features of width {self.lm_dim}, got {got}")
            x = torch.cat([x, lm.to(x.dtype)], dim=-1)  # (B, T, E + F + D)
        return self.drop(x)


class SoftmaxTagHead(nn.Linear):
    """Tag scores (B, T, K) from encoder outputs; each token's tag is chosen on its own."""

    def __init__(self, in_size: int, num_tags: int, dropout: float = 0.0) -> None:
        super().__init__(in_size, num_tags)
        self.drop = Dropout(dropout)

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(self.drop(features))  # (B, T, K)

    def loss(self, scores: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Summed cross-entropy over the real tokens (tags -1 and padding are left out)."""
        keep = mask & (tags >= 0)
        return F.cross_entropy(scores[keep], tags[keep], reduction="sum")

    def decode(self, scores: Tensor, mask: Tensor) -> Tensor:
        """(B, T) best tag ids, 0 in the padding."""
        return scores.argmax(-1).masked_fill(~mask, 0)


class CRFTagHead(SoftmaxTagHead):
    """Tag scores as CRF emissions; the loss is the negative log-likelihood of the whole gold sequence."""

    def __init__(self, in_size: int, num_tags: int, dropout: float = 0.0) -> None:
        super().__init__(in_size, num_tags, dropout)
        self.crf = CRF(num_tags)

    def loss(self, scores: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Summed -log p(gold sequence) over the sentences whose every gold tag is known."""
        known = ((tags >= 0) | ~mask).all(dim=1)  # (B,)
        if not bool(known.all()):
            scores, tags, mask = scores[known], tags[known], mask[known]
        if scores.shape[0] == 0:
            return scores.sum() * 0.0
        return (self.crf.log_partition(scores, mask) - self.crf.score(scores, tags, mask)).sum()

    def decode(self, scores: Tensor, mask: Tensor) -> Tensor:
        return self.crf.viterbi(scores, mask)[0]


class Tagger(nn.Module):
    """A BiLSTM(-CRF) tagger over a word vocabulary, a character set and K tags (and ``lm_dim`` wide
    character-LM features when ``cfg.char_lm`` is set)."""

    def __init__(
        self,
        cfg: TaggerConfig,
        num_words: int,
        num_chars: int,
        num_tags: int,
        unk_id: int = 0,
        lm_dim: int = 0,
        num_aux: int = 0,
    ) -> None:
        super().__init__()
        cfg.check()
        if bool(cfg.char_lm) != (lm_dim > 0):
            raise ValueError(f"char_lm {cfg.char_lm!r} needs lm_dim > 0 (and lm_dim > 0 needs it), got {lm_dim}")
        self.cfg = cfg
        self.input = WordCharInput(cfg, num_words, num_chars, unk_id, lm_dim)
        precision = resolve_matmul_dtype(cfg.matmul_dtype, torch.device("cpu"))  # see to_device
        self.encoder = RecurrentEncoder(
            cfg.cell, self.input.output_size, cfg.hidden, cfg.layers, True, cfg.dropout, cfg.engine, precision
        )
        head = CRFTagHead if cfg.head == "crf" else SoftmaxTagHead
        self.head = head(self.encoder.output_size, num_tags, cfg.dropout)
        # A second column's softmax head (--aux-column): trained beside the head, never used to tag.
        self.aux_head = SoftmaxTagHead(self.encoder.output_size, num_aux, cfg.dropout) if num_aux else None
        # Tagging one sentence (not training) runs the recurrence through recurrent/one_sequence.py, where torch's
        # fused LSTM spends milliseconds per call on setup (bench/notes/tagging.md, "Prediction speed").
        self.fast = True

    def set_engine(self, name: str) -> None:
        """Compute the recurrence with another engine from now on (the weights stay as they are)."""
        self.encoder.engine = name

    def to_device(self, device: torch.device) -> Tagger:
        """Move to ``device``, where ``matmul_dtype`` auto means that device's choice (float32 on a GPU)."""
        self.encoder.matmul_dtype = resolve_matmul_dtype(self.cfg.matmul_dtype, device)
        return self.to(device)

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor, lm: Tensor | None = None) -> Tensor:
        """(B, T) words, (B, T, W) chars, (B,) lengths (, (B, T, D) LM features) -> tag scores (B, T, K)."""
        return self.head(self.encode(words, chars, lengths, lm))

    def forward_both(
        self, words: Tensor, chars: Tensor, lengths: Tensor, lm: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Tag scores (B, T, K) and the auxiliary head's scores (B, T, K_aux), or None without one."""
        outputs = self.encode(words, chars, lengths, lm)
        return self.head(outputs), None if self.aux_head is None else self.aux_head(outputs)

    def encode(self, words: Tensor, chars: Tensor, lengths: Tensor, lm: Tensor | None = None) -> Tensor:
        """The encoder's outputs (B, T, 2H), zero in the padding."""
        x = self.input(words, chars, lm)  # (B, T, in)
        if self.fast and x.shape[0] == 1 and not (self.training or torch.is_grad_enabled()) and x.is_cpu:
            one = OneSequenceLSTM.for_encoder(self.encoder)
            if one is not None:
                n = int(lengths[0])
                out = one(x[0, :n])[-1]  # (n, 2H)
                return out.unsqueeze(0) if n == x.shape[1] else F.pad(out, (0, 0, 0, x.shape[1] - n)).unsqueeze(0)
        return self.encoder(x, lengths=lengths)[0]

    def loss(self, scores: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Summed loss of the batch (per token for softmax, per sentence for the CRF)."""
        return self.head.loss(scores, tags, mask)

    def decode(self, scores: Tensor, mask: Tensor) -> Tensor:
        """(B, T) predicted tag ids, 0 in the padding."""
        return self.head.decode(scores, mask)


class TaggerEnsemble(nn.Module):
    """Taggers of one vocabulary and tag set, trained apart, that tag together.

    A CRF member's score of a tag sequence is its start, emission, transition and end scores summed, all
    linear in the parameters and the emissions, so averaging emissions and CRF parameters over the members
    gives a CRF whose score is the members' mean score: its Viterbi path maximizes the product of the
    members' (unnormalized) sequence probabilities. Softmax members are averaged in log-probability.
    """

    def __init__(self, members: list[Tagger]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        heads = {m.cfg.head for m in members}
        if len(heads) != 1:
            raise ValueError(f"the members of an ensemble need one kind of head, got {sorted(heads)}")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg
        self._mean_head: tuple[tuple[tuple[int, int], ...], SoftmaxTagHead] | None = None

    def set_engine(self, name: str) -> None:
        for m in self.members:
            m.set_engine(name)

    def to_device(self, device: torch.device) -> TaggerEnsemble:
        for m in self.members:
            m.to_device(device)
        return self.to(device)

    def forward(self, words: Tensor, chars: Tensor, lengths: Tensor, lm: Tensor | None = None) -> Tensor:
        """The members' mean tag scores (B, T, K): CRF emissions, or log-probabilities for softmax heads."""
        scores = [m(words, chars, lengths, lm) for m in self.members]
        if self.cfg.head == "softmax":
            scores = [s.log_softmax(-1) for s in scores]
        return torch.stack(scores).mean(0)

    def mean_head(self) -> SoftmaxTagHead:
        """A head that scores and decodes the mean scores: for CRF members, one with their mean CRF parameters.

        Kept until a member's head changes (its tensors' versions), since tagging calls it for every batch."""
        params = [p for m in self.members for p in m.head.parameters()]
        versions = tuple((id(p), p._version) for p in params)
        if self._mean_head is None or self._mean_head[0] != versions or torch.is_grad_enabled():
            self._mean_head = (versions, self._new_mean_head())
        return self._mean_head[1]

    def _new_mean_head(self) -> SoftmaxTagHead:
        head = copy.deepcopy(self.members[0].head)
        if isinstance(head, CRFTagHead):
            with torch.no_grad():
                for name, p in head.crf.named_parameters():
                    p.copy_(torch.stack([m.head.crf.get_parameter(name) for m in self.members]).mean(0))
        return head

    def loss(self, scores: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        return self.mean_head().loss(scores, tags, mask)

    def decode(self, scores: Tensor, mask: Tensor) -> Tensor:
        return self.mean_head().decode(scores, mask)
