"""The Python API: ``rnnlm.train(...)``, ``rnnlm.load(run_dir)`` and the LanguageModel they return.

>>> lm = rnnlm.train("my_text.txt", cell="lstm", epochs=5, out="runs/mine")
>>> lm = rnnlm.load("runs/mine")
>>> print(lm.generate("Once upon", length=200, temperature=0.8))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlm.core.checkpoint import read_metrics
from rnnlm.core.errors import CheckpointError, DataError, VocabError
from rnnlm.core.fields import renamed_keyword
from rnnlm.core.hub import local_run_dir
from rnnlm.core.text import read_texts
from rnnlm.core.vocab import Vocab
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import LMEvalConfig, RunConfig, build_config, split_settings
from rnnlm.lm.data.dataset import apply_newlines
from rnnlm.lm.evaluate import DYNAMIC_LR, DYNAMIC_SEQ_LEN, dynamic_evaluate, score
from rnnlm.lm.generate import beam_search, generate_ids
from rnnlm.lm.model import RNNLM
from rnnlm.training import runs
from rnnlm.training.metrics import summarize


class LanguageModel:
    """A trained model with its vocabulary: generate text, score text."""

    def __init__(
        self,
        model: RNNLM,
        vocab: Vocab,
        config: RunConfig,
        run_dir: Path | None = None,
        metrics: dict[str, Any] | None = None,
        checkpoint: dict[str, str] | None = None,
    ):
        self.model, self.vocab, self.config = model, vocab, config
        self.run_dir = run_dir
        self.metrics = metrics or {}  # the last line of the run's metrics.jsonl
        self.checkpoint = checkpoint or {}  # which weights were loaded: path, step, epoch (, val_loss)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        m = self.config.model
        return (
            f"LanguageModel({m.cell} {m.layers}x{m.hidden}, engine {m.engine}, {self.vocab.level} vocab "
            f"{len(self.vocab)}, run_dir={str(self.run_dir)!r})"
        )

    def export(self, out: str | Path, format: str = "onnx") -> Path:
        """Write the model's step function (ids and state in, logits and state out) to ``out`` as ``format``:
        onnx or exported-program (lm/export.py says what the graph takes and gives)."""
        from rnnlm.lm.export import export_model

        return export_model(self.model, self.vocab, self.config, out, format, self.checkpoint)

    def encode_prefix(self, prefix: str) -> list[int]:
        """Token ids of a prefix; empty means 'start of a line'. Unknown tokens are an error or <unk>."""
        if not prefix:
            start = "<eos>" if self.vocab.level == "word" else "\n"
            if start not in self.vocab:
                raise VocabError("an empty prefix needs a newline in the vocabulary; give --prefix TEXT")
            return [self.vocab.id_of(start)]
        ids = self.vocab.encode(prefix).tolist()
        if self.vocab.unk is not None and self.vocab.id_of(self.vocab.unk) in ids and self.vocab.unk not in prefix:
            warnings.warn(
                f"the prefix {prefix!r} has tokens outside the vocabulary; they were read as {self.vocab.unk}",
                stacklevel=2,
            )
        return ids

    def stream(
        self,
        prefix: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the text piece by piece as it is generated (one sample); the prefix comes first."""
        ids = self.encode_prefix(prefix)
        # generate_ids checks its arguments when called, so bad settings fail before any text is out.
        steps = generate_ids(
            self.model, ids, length, temperature=temperature, top_k=top_k, top_p=top_p, generator=_generator(seed)
        )
        yield prefix
        prev = ids[-1]
        for step in steps:
            tok = int(step[0])
            yield self.vocab.decode_after(prev, [tok])
            prev = tok

    def generate(
        self,
        prefix: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        beam: int = 0,
        num_samples: int = 1,
        seed: int | None = None,
    ) -> str | list[str]:
        """Prefix plus `length` generated tokens; a list when num_samples > 1.

        temperature 0 is greedy; lower is more conservative, higher more random. beam > 0 runs
        beam search and returns the num_samples best beams.
        """
        ids = self.encode_prefix(prefix)
        if beam:
            beams = beam_search(self.model, ids, length, beam, num_return=num_samples)
            outs = [prefix + self.vocab.decode_after(ids[-1], seq) for seq, _ in beams]
        else:
            steps = list(
                generate_ids(
                    self.model,
                    ids,
                    length,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    num_samples=num_samples,
                    generator=_generator(seed),
                )
            )
            cols = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(num_samples)]
            outs = [prefix + self.vocab.decode_after(ids[-1], seq) for seq in cols]
        return outs[0] if num_samples == 1 else outs

    def evaluate(
        self,
        text: str | None = None,
        paths: Sequence[str] | None = None,
        batch_size: int = LMEvalConfig.eval_batch_size,
        seq_len: int = LMEvalConfig.eval_seq_len,
        protocol: str = LMEvalConfig.eval_protocol,
        block: int = LMEvalConfig.eval_block,
    ) -> dict[str, Any]:
        """Mean loss (nats/token), perplexity and bits per token over a text or files: protocol "carried" reads it
        in order with the state carried, "windows" as consecutive cold windows of ``block`` tokens (nanoGPT's)."""
        if (text is None) == (paths is None):
            raise ValueError("give exactly one of text= or paths=")
        if paths is not None:
            text = read_texts(paths)
        assert text is not None
        return self.evaluate_ids(self.encode_text(text), batch_size, seq_len, protocol, block)

    def encode_text(self, text: str) -> np.ndarray:
        """Token ids of text, with the preprocessing the model was trained with."""
        return self.vocab.encode(apply_newlines(text, self.config.data.newlines))

    def evaluate_ids(
        self,
        ids: np.ndarray,
        batch_size: int = LMEvalConfig.eval_batch_size,
        seq_len: int = LMEvalConfig.eval_seq_len,
        protocol: str = LMEvalConfig.eval_protocol,
        block: int = LMEvalConfig.eval_block,
    ) -> dict[str, Any]:
        """Like evaluate, on token ids; the result names the protocol (and the block of "windows")."""
        ec = LMEvalConfig(eval_batch_size=batch_size, eval_seq_len=seq_len, eval_protocol=protocol, eval_block=block)
        ec.check()
        if len(ids) < 2:
            raise DataError(f"scoring needs at least 2 tokens (one to read, one to predict); got {len(ids)}")
        nll, n = score(self.model, ids, ec)
        s = summarize(nll, n)
        out = {"tokens": n, "loss": s["loss"], "ppl": s["ppl"], "bits_per_token": s["bpt"], "protocol": protocol}
        return out | ({"block": block} if protocol == "windows" else {})

    def evaluate_dynamic(
        self, ids: np.ndarray, lr: float = DYNAMIC_LR, decay: float = 0.0, seq_len: int = DYNAMIC_SEQ_LEN
    ) -> dict[str, Any]:
        """Dynamic evaluation of token ids (one stream; the weights are put back afterwards): a separate figure
        from ``evaluate_ids``, since the model learns from the text as it scores it (``dynamic_evaluate``)."""
        if len(ids) < 2:
            raise DataError(f"scoring needs at least 2 tokens (one to read, one to predict); got {len(ids)}")
        nll, n = dynamic_evaluate(self.model, ids, lr, decay, 1, seq_len)
        s = summarize(nll, n)
        return {
            "tokens": n,
            "loss": s["loss"],
            "ppl": s["ppl"],
            "bits_per_token": s["bpt"],
            "lr": lr,
            "decay": decay,
            "seq_len": seq_len,
        }


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def train(
    data: str | Path | Sequence[str | Path] | None = None,
    *,
    preset: str | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> LanguageModel:
    """Train a model and return it, as ``rnnlm.load(run_dir)`` would: with the best weights (lowest
    validation loss), or the last ones when the run had no validation text. ``lm.checkpoint`` says which.

    `data`: files, directories or globs (default: --corpus or python-docs). Keyword settings are the
    CLI's flags in snake_case (hidden=512, cell="gru", epochs=20, out="runs/x"); preset="d2l" starts
    from the textbook recipe, no preset from char-cpu. resume=RUN_DIR continues a run exactly.
    """
    if data is not None:
        settings["paths"] = [str(data)] if isinstance(data, (str, Path)) else [str(p) for p in data]
    overrides = split_settings(settings)
    if resume is not None:
        run = runs.open_run(resume, lm_run.KIND)  # read once; train checks the overrides once
        cfg = runs.with_overrides(run.config, overrides)
    else:
        run, cfg = None, build_config(overrides, preset)
    result = lm_run.train(cfg, resume=run, log=log)
    return load(result.run_dir, "best", device=str(next(result.model.parameters()).device))


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str | None = None,
    *,
    impl: str | None = None,
) -> LanguageModel:
    """Load a trained run ('best' falls back to 'last' when the run had no validation data): a run directory, or
    a Hugging Face Hub repository id ("user/name") that holds one, when huggingface_hub is installed.

    ``engine`` picks the engine that computes the recurrence (any engine reads any run's weights); ``impl=`` is
    its deprecated name, kept for old notebooks.
    """
    engine = renamed_keyword(engine, impl, "impl", "engine", "rnnlm.load")
    run_dir = local_run_dir(run_dir)  # a Hub id ("user/name") is downloaded first, with huggingface_hub
    model, vocab, cfg, meta = lm_run.load_model(run_dir, checkpoint, device, engine)
    try:
        rows = read_metrics(run_dir)
    except CheckpointError:
        rows = []
    return LanguageModel(model, vocab, cfg, Path(run_dir), rows[-1] if rows else {}, meta)
