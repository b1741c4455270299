"""A tagger run as a whole: setting it up and training it (one tagger or an ensemble), or resuming it.

``train(cfg, resume, log)`` is what ``rnnlm tag train`` and ``rnnlm.tagging.train`` (tagging/api.py, which also
loads a run) both call.

A run directory holds config.json (format ``rnnlm-tag-run``), vocab.json (words), chars.json, tags.json,
metrics.jsonl and the safetensors checkpoints, written atomically as for language models. A run with
character-LM features (``char_lm``) also holds char_lm/forward and char_lm/backward, the copies of the two
language models it reads (char_lm_features.py): it always reads these copies, never the folder it was
trained from, so the run directory alone can be moved, resumed, evaluated and used.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlm.core import checkpoint as ckpt
from rnnlm.core.atomic import atomic_write_json
from rnnlm.core.errors import CheckpointError, ConfigError, RnnlmError
from rnnlm.core.vocab import EOS, UNK, Vocab
from rnnlm.recurrent.engines import resolve_engine
from rnnlm.tagging.char_lm_features import CharLMFeatures, copy_char_lms
from rnnlm.tagging.config import CHUNK_COLUMNS, COLUMNS, TagRunConfig, build_tag_config
from rnnlm.tagging.conll import check_tags
from rnnlm.tagging.encoding import (
    EncodedSentence,
    TagEncoder,
    encode,
    guess_format,
    read_tagged,
    resolve_scheme,
)
from rnnlm.tagging.metrics import require_seqeval
from rnnlm.tagging.model import Tagger, TaggerEnsemble
from rnnlm.tagging.schemes import TagSet
from rnnlm.tagging.task import TaggingTask, TagSchemes
from rnnlm.tagging.word_vectors import read_word_vectors, unit_rms
from rnnlm.training import distributed, runs
from rnnlm.training import ensemble as members
from rnnlm.training.runs import MEMBERS, MODEL, count_parameters

CHARS, TAGS, AUX_TAGS, CHAR_LM = "chars.json", "tags.json", "aux_tags.json", "char_lm"
COMMAND = "rnnlm tag train"
# A resume may change these; any engine at either precision reads the same weights.
RESUMABLE = {
    "train": runs.RESUMABLE_TRAIN | {"jobs"},
    "model": {"engine", "matmul_dtype"},
    "eval": {"eval_batch_size"},
}


# -- runs ------------------------------------------------------------------------------------------------


def resolve_data(cfg: TagRunConfig) -> None:
    """Fill in the format and column the run uses, and store paths absolute (resume and eval from anywhere)."""
    d = cfg.data
    d.format = guess_format(d.train) if d.format == "auto" else d.format
    d.column = d.column or COLUMNS[d.format][0]
    if d.column not in COLUMNS[d.format]:
        raise RnnlmError(f"--column {d.column!r} is not a {d.format} column; choose {', '.join(COLUMNS[d.format])}")
    if d.aux_column is not None and d.aux_column not in COLUMNS[d.format]:
        raise RnnlmError(
            f"--aux-column {d.aux_column!r} is not a {d.format} column; choose {', '.join(COLUMNS[d.format])}"
        )
    if d.aux_column == d.column:
        raise RnnlmError(f"--aux-column {d.aux_column!r} is the column learned already; choose another")
    d.train = str(Path(d.train).expanduser().absolute())
    d.dev = str(Path(d.dev).expanduser().absolute()) if d.dev else None
    m = cfg.model
    m.char_lm = str(Path(m.char_lm).expanduser().absolute()) if m.char_lm else None


def read_side(run_dir: Path, cfg: TagRunConfig) -> TagEncoder:
    """The vocabularies of a tagger run directory (words, characters, tags, a second column's tags)."""
    try:
        words, chars = Vocab.load(run_dir / ckpt.VOCAB), Vocab.load(run_dir / CHARS)
        tags = TagSet.from_dict(ckpt.read_json(run_dir / TAGS, "tag set"))
        aux = TagSet.from_dict(ckpt.read_json(run_dir / AUX_TAGS, "tag set")) if cfg.data.aux_column else None
    except (RnnlmError, KeyError, ValueError) as e:
        raise CheckpointError(f"{run_dir}: cannot read the vocabularies ({e})") from None
    return TagEncoder(words, chars, tags, cfg.data.lowercase, cfg.data.zero_digits, aux)


def read_char_lm(run_dir: Path, cfg: TagRunConfig, device: torch.device) -> CharLMFeatures | None:
    """The run's own copy of its character LMs (None when it reads none)."""
    if not cfg.model.char_lm:
        return None
    if not (run_dir / CHAR_LM).is_dir():
        raise CheckpointError(
            f"{run_dir}: the run reads character-LM features but {run_dir / CHAR_LM} is missing; "
            f"copy it back from the run's original folder ({cfg.model.char_lm})"
        )
    return load_char_lm(run_dir / CHAR_LM, cfg, device)


def load_char_lm(folder: str | Path, cfg: TagRunConfig, device: torch.device) -> CharLMFeatures:
    """The character LMs of a folder, read as the run's config says (layers, pooling)."""
    m = cfg.model
    return CharLMFeatures.load(folder, device, pool=m.char_lm_pool == "document", all_layers=m.char_lm_layers == "all")


def build_tagger(
    cfg: TagRunConfig, enc: TagEncoder, weights: dict[str, torch.Tensor] | None = None, lm_dim: int = 0
) -> Tagger | TaggerEnsemble:
    """A tagger for the config and vocabularies (and character-LM features of width lm_dim); with weights,
    loaded strictly: an ensemble's weights (keys ``members.<i>.``) give a TaggerEnsemble of as many members."""

    def one() -> Tagger:  # char 0 is padding
        num_aux = len(enc.aux) if enc.aux is not None else 0
        return Tagger(cfg.model, len(enc.words), len(enc.chars) + 1, len(enc.tags), enc.unk_word, lm_dim, num_aux)

    count = len({k.split(".")[1] for k in weights or {} if k.startswith(f"{MEMBERS}.")})
    model = TaggerEnsemble([one() for _ in range(count)]) if count else one()
    if weights is not None:
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"the checkpoint does not fit the run's config ({str(e).splitlines()[0]})") from None
    return model


def _engine(cfg: TagRunConfig, device: torch.device) -> tuple[str, str]:
    """A tagger's recurrence reads padded batches of dense word features; the scratch engine multiplies in
    float32 whatever ``matmul_dtype`` says (the config refuses an explicit bfloat16 with it)."""
    m = cfg.model
    engine, dtype = resolve_engine(m.engine, m.matmul_dtype, device, m.cell, one_hot=False, padded=True)
    return engine, "float32" if engine == "scratch" else dtype


def _build(cfg: TagRunConfig, enc: TagEncoder, weights: dict[str, torch.Tensor] | None, char_lm: Any) -> Any:
    return build_tagger(cfg, enc, weights, char_lm.dim if char_lm is not None else 0)


KIND = runs.register_kind(
    runs.RunKind(
        noun="tagger run",
        command=COMMAND,
        config=TagRunConfig,
        resumable=RESUMABLE,
        read_side=read_side,
        build_model=_build,
        resolve_engine=_engine,
        read_extra=read_char_lm,
        prepare=resolve_data,
    )
)


def read_vectors_for(cfg: TagRunConfig, enc: TagEncoder) -> tuple[list[str], np.ndarray]:
    """The --word-vectors file's words (normalized as the run looks words up) and vectors, checked against
    --word-dim."""
    m = cfg.model
    words, vectors = read_word_vectors(m.word_vectors, enc.normalize, m.vector_words)
    if vectors.shape[1] != m.word_dim:
        raise ConfigError(
            f"--word-vectors {m.word_vectors} holds {vectors.shape[1]}-dimensional vectors but --word-dim is "
            f"{m.word_dim}; pass --word-dim {vectors.shape[1]}"
        )
    keep = [i for i, w in enumerate(words) if w not in (UNK, EOS)]  # the file's <unk> is not the tagger's
    return [words[i] for i in keep], vectors[keep]


def set_word_vectors(model: Tagger, enc: TagEncoder, words: list[str], vectors: np.ndarray) -> None:
    """Start the word embedding of every word of ``words`` from its vector, all scaled by one factor to the
    size of the random rows (``unit_rms``)."""
    ids = torch.as_tensor([enc.words.id_of(w) for w in words], dtype=torch.long)
    with torch.no_grad():
        model.input.words.weight[ids] = torch.from_numpy(unit_rms(vectors)).to(model.input.words.weight.dtype)


def train(
    cfg: TagRunConfig,
    resume: str | Path | runs.Run | None = None,
    log: Callable[[str], None] = print,
    *,
    deadline: float | None = None,
) -> runs.TrainResult:
    """Train a tagger as cfg says (a new run), or continue the run in ``resume``.

    The CLI and the Python API both train through here. ``resume`` may be the run already opened
    (runs.open_run), which is then not read again. With ``cfg.train.ensemble`` > 1 the members train in
    ``RUN/members/<i>`` (``jobs`` of them at a time, each in its own process that prints its lines to stdout),
    and the run's model.safetensors holds them all (training/ensemble.py).

    ``deadline`` (a ``time.monotonic()`` value; a new run only): once the data are read and encoded, the
    ``--time-budget`` of training (each member's) is cut to end by then, so that one budget covers the encoding
    too (tagging/recipe.py); config.json records the budget that results.
    """
    cfg, run_dir, run = runs.begin(cfg, resume, KIND)
    ensemble = cfg.train.ensemble > 1
    if ensemble and distributed.world_size() > 1:
        raise ConfigError("under torchrun a tagger run trains one model: drop --ensemble, or run it without torchrun")
    log = distributed.main_log(log)
    weights = state = None
    if run is not None and not ensemble:
        weights, state = runs.resume_checkpoint(run_dir)  # before the data are read: fails at once
    elif run is not None and members.has_final_model(run_dir):
        log(f"nothing to do: {run_dir} holds a finished {MODEL}; start a new run to train differently")
        return runs.TrainResult(run_dir, cfg, "finished before")
    resolved = runs.resolve_run(cfg, KIND)  # config.json and the header say what runs
    job = _setup(cfg, run_dir, run, resolved)
    job.weights, job.state = weights, state
    if deadline is not None and run is None:
        left = max(1.0, deadline - time.monotonic())
        tc = cfg.train
        tc.time_budget = min(tc.time_budget, left) if tc.time_budget is not None else left
        job.header.append(f"time budget: {tc.time_budget:.0f} s of training left once the data are encoded")

    def write_files() -> None:
        _write_files(job, new=run is None)

    if not ensemble:
        return runs.TrainResult(run_dir, cfg, _train_model(job, write_files, log))
    runs.make_run_dir(run_dir)
    with runs.locked(run_dir, COMMAND, log):  # the members' folders are locked by the processes that train them
        write_files()
        for line in job.header:
            log(line)
        job.header = []
        _train_ensemble(job, run is not None, log)
    return runs.TrainResult(run_dir, cfg, f"ensemble of {cfg.train.ensemble} members saved in {MODEL}")


def _setup(cfg: TagRunConfig, run_dir: Path, run: runs.Run | None, resolved: runs.Resolved) -> _Job:
    """Read and encode the data (with the run's vocabularies on a resume, new ones otherwise), and write the
    header: everything a tagger (or each member) trains from. Nothing is written yet."""
    d, m, device = cfg.data, cfg.model, resolved.device
    char_lm = None
    if m.char_lm:  # a new run reads the given folder (and copies it); a resumed one its own copy
        char_lm = read_char_lm(run_dir, cfg, device) if run is not None else load_char_lm(m.char_lm, cfg, device)
    train_sents = read_tagged(d.train, d.format, d.column, d.aux_column)
    d.scheme = resolve_scheme(train_sents, d.column, d.scheme, d.column in CHUNK_COLUMNS)
    schemes = TagSchemes(d.scheme, d.model_scheme if d.scheme != "none" else "none")
    if schemes.chunked and d.dev:  # now, not at the first dev evaluation: no run directory exists yet
        require_seqeval(f"the dev scores of the {d.column} column (entity F1 on --dev {d.dev})")
    gold = [schemes.to_model(s.tags[d.column]) for s in train_sents]
    aux_gold = [s.tags[d.aux_column] for s in train_sents] if d.aux_column else None
    vectors, trained_words = None, 0
    if run is not None:
        enc = run.side
    else:
        enc = TagEncoder.build([s.tokens for s in train_sents], gold, d.lowercase, d.zero_digits, d.min_freq, aux_gold)
        if m.word_vectors:
            vectors = read_vectors_for(cfg, enc)
            trained_words = len(enc.words)
            enc = enc.with_words(vectors[0])
    start = time.perf_counter()
    by_doc = m.char_lm_context == "document"
    need_docs = by_doc or m.char_lm_pool == "document"
    train_docs = [s.doc for s in train_sents] if need_docs else None
    train = encode(enc, [s.tokens for s in train_sents], gold, d.max_word_chars, char_lm, train_docs, by_doc, aux_gold)
    dev = dev_gold = None
    if d.dev:
        dev_sents = read_tagged(d.dev, d.format, d.column)
        if schemes.chunked:
            check_tags(dev_sents, d.column, d.scheme)
        dev_gold = [s.tags[d.column] for s in dev_sents]
        dev_tags = [schemes.to_model(g) for g in dev_gold]
        dev_docs = [s.doc for s in dev_sents] if need_docs else None
        dev = encode(enc, [s.tokens for s in dev_sents], dev_tags, d.max_word_chars, char_lm, dev_docs, by_doc)
    encode_s = time.perf_counter() - start
    header = [
        f"data: {d.train} ({d.format}, column {d.column}, scheme {d.scheme}) | train {len(train):,} sentences "
        f"{sum(len(s.words) for s in train):,} tokens | dev {len(dev) if dev else 'none'} | words {len(enc.words):,}, "
        f"chars {len(enc.chars):,}, tags {len(enc.tags)}"
        + (f" ({schemes.model})" if schemes.chunked else "")
        + (f" | {d.aux_column} {len(enc.aux)} tags beside (weight {cfg.train.aux_weight})" if enc.aux else ""),
        f"model: bi-{m.cell}, {m.layers} x {m.hidden} per direction, words {m.word_dim}, char CNN "
        f"{m.char_filters if m.char_dim else 'off'}, {m.head} head, engine {resolved.engine_text(m.engine)}, "
        f"{resolved.matmul_dtype} matmuls | device {device}",
    ]
    if vectors is not None:
        found = sum(enc.words.id_of(w) < trained_words for w in vectors[0])
        header.append(
            f"word vectors: {len(vectors[0]):,} from {m.word_vectors} | {found:,} of the "
            f"{trained_words:,} training words found, {len(enc.words) - trained_words:,} words added"
        )
    if char_lm is not None:
        f, b = char_lm.forward.model.cfg, char_lm.backward.model.cfg
        header.append(
            f"char LM features: {char_lm.dim} per word (forward {f.cell} {f.layers} x {f.hidden}, backward "
            f"{b.cell} {b.layers} x {b.hidden}, frozen) from {m.char_lm}, {m.char_lm_context} context, "
            f"{m.char_lm_layers} layers{', pooled over documents' if char_lm.pool else ''} | "
            f"train and dev encoded in {encode_s:.1f} s"
        )
    lm_dim = char_lm.dim if char_lm else 0
    return _Job(cfg, run_dir, enc, train, dev, dev_gold, schemes, lm_dim, vectors, header, resolved)


def _write_files(job: _Job, new: bool) -> None:
    """A run's config.json (the new limits, on a resume) and, for a new run, its vocabularies and its copy of
    the character LMs. config.json comes last: it is what makes the folder a run, so a process killed before it
    leaves a folder that a new run may take, never a run without its vocabularies."""
    if new:
        enc, run_dir = job.enc, job.run_dir
        enc.words.save(run_dir / ckpt.VOCAB)
        enc.chars.save(run_dir / CHARS)
        atomic_write_json(run_dir / TAGS, enc.tags.to_dict())
        if enc.aux is not None:
            atomic_write_json(run_dir / AUX_TAGS, enc.aux.to_dict())
        if job.cfg.model.char_lm:
            copy_char_lms(job.cfg.model.char_lm, run_dir / CHAR_LM)
    runs.write_config(job.run_dir, job.cfg, job.resolved)


class SharedSentences:
    """Encoded sentences packed into one flat tensor per field (words, chars, tags, lm, aux) in shared memory.

    Pickled for a worker process (multiprocessing's pickler, with torch's reductions), each tensor travels as a
    handle to the parent's memory, not as a copy: the character-LM features of CoNLL-2003 NER are about 460 MB,
    which every ensemble worker used to unpickle into its own memory. ``unpack`` gives the sentences back as
    numpy views of that memory (writable, since torch.from_numpy warns on read-only arrays; nothing writes them).
    """

    def __init__(self, sentences: Sequence[EncodedSentence]) -> None:
        self.count = len(sentences)
        self.flat: dict[str, torch.Tensor] = {}  # field -> every sentence's values, one sentence after another
        self.shapes: dict[str, torch.Tensor] = {}  # field -> (count, ndim): each sentence's array shape (shared too)
        for f in dataclasses.fields(EncodedSentence):
            arrays = [getattr(s, f.name) for s in sentences]
            if not arrays or all(a is None for a in arrays):
                continue
            if any(a is None for a in arrays):
                raise ValueError(f"some encoded sentences have {f.name} and some do not")
            self.shapes[f.name] = torch.tensor([a.shape for a in arrays], dtype=torch.int64).share_memory_()
            flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays])
            self.flat[f.name] = torch.from_numpy(flat).share_memory_()

    def unpack(self) -> list[EncodedSentence]:
        """The sentences, each array a view of the shared tensors (which other processes read: never write them)."""
        columns: dict[str, list[np.ndarray]] = {}
        for name, tensor in self.flat.items():
            whole = tensor.numpy()
            shapes = self.shapes[name].numpy()
            ends = np.cumsum(np.prod(shapes, axis=1))
            columns[name] = [
                whole[end - size : end].reshape(shape)
                for end, size, shape in zip(ends, np.prod(shapes, axis=1), shapes.tolist(), strict=True)
            ]
        return [EncodedSentence(**{name: column[i] for name, column in columns.items()}) for i in range(self.count)]


def _shared(sentences: list[EncodedSentence] | SharedSentences | None) -> list[EncodedSentence] | None:
    """The sentences of a job, unpacked where a worker received them packed."""
    return sentences.unpack() if isinstance(sentences, SharedSentences) else sentences


@dataclass
class _Job:
    """Everything that training one tagger needs; picklable, so that a worker process can train it (an ensemble's
    workers receive the sentences and word vectors in shared memory: SharedSentences, a shared tensor)."""

    cfg: TagRunConfig
    run_dir: Path
    enc: TagEncoder
    train: list[EncodedSentence] | SharedSentences
    dev: list[EncodedSentence] | SharedSentences | None
    dev_gold: list[list[str]] | None
    schemes: TagSchemes
    lm_dim: int
    vectors: tuple[list[str], np.ndarray | torch.Tensor] | None  # start the word embeddings from these (a new model)
    header: list[str]
    resolved: runs.Resolved  # the device, engine and precision, resolved once for the run
    weights: dict[str, torch.Tensor] | None = None  # resume from these weights and trainer state
    state: dict[str, Any] | None = None
    name: str = ""  # an ensemble member's name: it prefixes the member's lines
    top: Path | None = None  # the ensemble run a member belongs to
    threads: int = 0  # set torch's thread count first (a worker process)


def _print(msg: str) -> None:
    print(msg, flush=True)  # a worker's lines reach a log file as they come


def _train_member(job: _Job, log: Callable[[str], None] = _print) -> str:
    """Train (or continue) an ensemble's member in job.run_dir through ensemble.train_member (asked to stop with the
    run, marked finished when it stops on its own); returns why it stopped. A module-level function, so that a
    worker process can run it."""
    assert job.top is not None, "a member's job names the ensemble run it belongs to"
    say = _prefixed(job.name, log)
    return members.train_member(
        job.name, job.run_dir, job.top, COMMAND, lambda extra: _train_model(job, None, say, extra)
    )


def _train_model(
    job: _Job, write_files: Callable[[], None] | None, log: Callable[[str], None], extra: Sequence[Any] = ()
) -> str:
    """Build (or restore) the tagger of a job and train it in job.run_dir (runs.train_model: the standard
    callbacks, and ``extra`` ones); returns why it stopped."""
    if job.threads:
        torch.set_num_threads(job.threads)
    cfg, device = job.cfg, job.resolved.device
    torch.manual_seed(cfg.train.seed)
    model = build_tagger(cfg, job.enc, job.weights, job.lm_dim)
    if job.vectors is not None and job.weights is None:
        words, vectors = job.vectors
        set_word_vectors(model, job.enc, words, vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors)
    model = model.to_device(device)
    train, dev = _shared(job.train), _shared(job.dev)
    assert train is not None
    task = TaggingTask(job.enc, train, dev, job.dev_gold, job.schemes, cfg.train, cfg.eval.eval_batch_size, device)
    if write_files is None:

        def write_files() -> None:
            runs.write_config(job.run_dir, cfg, job.resolved)

    seed = f" (seed {cfg.train.seed})" if job.name else ""
    header = [*job.header, f"{count_parameters(model):,} parameters | run {job.run_dir}{seed}"]
    _, reason, _ = runs.train_model(
        model, task, cfg.train, job.run_dir, write_files, header, log, job.state, COMMAND, extra
    )
    return reason


def _prefixed(name: str, log: Callable[[str], None]) -> Callable[[str], None]:
    def say(msg: str) -> None:
        log(f"{name} | {msg}")

    return say


def _train_ensemble(job: _Job, resuming: bool, log: Callable[[str], None]) -> None:
    """Train the members that have not finished (``jobs`` at a time), then save their best weights together in
    model.safetensors and log the ensemble's dev score."""
    cfg, run_dir, tc, device = job.cfg, job.run_dir, job.cfg.train, job.resolved.device
    cores = members.usable_cores()
    parallel, threads, worker_threads = members.ensemble_plan(tc.ensemble, tc.jobs, tc.threads, device, cores)
    todo = []
    seeds = [members.member_seed(tc.seed, i) for i in range(tc.ensemble)]
    vectors = job.vectors
    for i, (where, seed) in enumerate(zip(members.member_dirs(run_dir, tc.ensemble), seeds, strict=True)):
        name = f"member {i + 1}/{tc.ensemble}"
        if resuming and members.is_finished(where):
            log(f"{name}: finished before, in {where}")
            continue
        weights, state = members.member_start(where, resuming)
        if weights is None and cfg.model.word_vectors and vectors is None:
            vectors = _vectors_again(cfg, job.enc)  # a resume: a member that saved nothing starts as a new one
        member = copy.deepcopy(cfg)
        member.train = dataclasses.replace(
            tc, seed=seed, out=str(where), ensemble=1, jobs=1, threads=threads,
            progress=tc.progress and parallel == 1,
        )  # fmt: skip
        todo.append(dataclasses.replace(
            job, cfg=member, run_dir=where, weights=weights, state=state, name=name, top=run_dir,
            threads=worker_threads, vectors=vectors if weights is None else None,
        ))  # fmt: skip
    if todo:
        log(
            f"ensemble: {tc.ensemble} members (seeds {', '.join(map(str, seeds))}) in {run_dir / MEMBERS}, "
            f"{len(todo)} to train, {min(parallel, len(todo))} at a time"
            + members.threads_text(parallel, threads, worker_threads, cores)
        )
    if parallel <= 1:
        for member in todo:
            _train_member(member, log)
    elif todo:
        shared = _share_with_workers(job, vectors, log)
        if shared is not None:  # this process, too, reads the shared copy: its own goes
            train, dev, vectors = shared
            job.train, job.dev = train.unpack(), dev.unpack() if dev is not None else None
            todo = [
                dataclasses.replace(m, train=train, dev=dev, vectors=vectors if m.vectors is not None else None)
                for m in todo
            ]
        members.train_in_workers(todo, parallel, run_dir, COMMAND, _train_member)
    taggers = []
    for where, seed in zip(members.member_dirs(run_dir, tc.ensemble), seeds, strict=True):
        weights, meta = ckpt.load_weights(ckpt.checkpoint_path(where, "best"))  # the last without a dev set
        taggers.append(build_tagger(cfg, job.enc, weights, job.lm_dim))
        chosen = ", ".join(f"{k} {meta[k]}" for k in ("step", "epoch", "val_acc", "val_f1") if k in meta)
        log(f"member seed {seed}: {chosen}")
    model = TaggerEnsemble(taggers).to_device(device)
    meta: dict[str, Any] = {"members": len(taggers), "seeds": json.dumps(seeds)}
    if job.dev:
        sents = _shared(job.train) or [], _shared(job.dev)
        task = TaggingTask(job.enc, *sents, job.dev_gold, job.schemes, tc, cfg.eval.eval_batch_size, device)
        scores = task.evaluate(model)
        meta.update(scores)
        log("ensemble on dev: " + " | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    members.save_final(run_dir, model, meta, log)


def _share_with_workers(
    job: _Job, vectors: tuple[list[str], np.ndarray] | None, log: Callable[[str], None]
) -> tuple[SharedSentences, SharedSentences | None, tuple[list[str], torch.Tensor] | None] | None:
    """The training and dev sentences, and the word vectors, in shared memory for every worker; None where
    shared memory is short (a container's /dev/shm is 64 MB unless enlarged): each worker then gets a copy."""
    try:
        train = SharedSentences(_shared(job.train) or [])
        dev = SharedSentences(job.dev) if isinstance(job.dev, list) else None
        shared = None if vectors is None else (vectors[0], torch.as_tensor(vectors[1]).share_memory_())
    except RuntimeError as e:
        log(
            f"note: no room in shared memory for the encoded sentences ({str(e).splitlines()[0]}), so each worker "
            f"gets its own copy; in a container, a larger /dev/shm (docker run --shm-size) lets them share one"
        )
        return None
    return train, dev, shared


def _vectors_again(cfg: TagRunConfig, enc: TagEncoder) -> tuple[list[str], np.ndarray]:
    """The --word-vectors of a resumed ensemble run, read again for a member that had saved nothing: it starts
    from them as it would have in the first session. Every word must be in the run's vocabulary, which holds
    the file's words since the run began; a file changed since then is refused rather than read differently."""
    words, vectors = read_vectors_for(cfg, enc)
    missing = [w for w in words if w not in enc.words.token_to_id]
    if missing:
        raise ConfigError(
            f"--word-vectors {cfg.model.word_vectors}: {len(missing):,} of its words (e.g. {missing[0]!r}) are not in "
            f"the run's vocabulary, so the file changed since the run began; restore the file the run was "
            f"started with to resume it"
        )
    return words, vectors


def config_for(
    overrides: dict[str, dict[str, Any]], resume: str | Path | None = None
) -> tuple[TagRunConfig, runs.Run | None]:
    """The config to train with, from explicit settings sorted into sections (the CLI's flags, the API's keyword
    arguments): the defaults with them, or on a resume the run's saved config with them (the run opened once,
    for ``train`` to continue; ``train`` checks what a resume may change)."""
    if resume is None:
        return build_tag_config(overrides), None
    run = runs.open_run(resume, KIND)
    return runs.with_overrides(run.config, overrides), run
