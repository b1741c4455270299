"""The Task protocol: every use's task satisfies it, a task that lacks a member does not, and the optional members
come with the defaults that the trainer, the graphed step and the run lifecycle rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlm.core.vocab import Vocab
from rnnlm.frames.data import FrameDataset
from rnnlm.frames.task import FrameTask
from rnnlm.lm.config import LMEvalConfig, LMTrainConfig
from rnnlm.lm.data.dataset import Corpus
from rnnlm.lm.task import LanguageModelTask
from rnnlm.tagging.config import TagTrainConfig
from rnnlm.tagging.encoding import TagEncoder, encode
from rnnlm.tagging.task import TaggingTask, TagSchemes
from rnnlm.training.config import TrainConfig
from rnnlm.training.task import Task

CPU = torch.device("cpu")


def lm_task(**train) -> LanguageModelTask:
    text = "the quick brown fox jumps over the lazy dog\n" * 20
    vocab = Vocab.build(text, "char")
    corpus = Corpus(vocab, np.asarray(vocab.encode(text)).astype(np.uint16), None, None, "char", "test text")
    return LanguageModelTask(corpus, LMTrainConfig(batch_size=2, seq_len=8, **train), LMEvalConfig(), CPU)


def tagging_task(scheme: str = "iob2") -> TaggingTask:
    tokens = [["Anna", "lives", "in", "Oslo"], ["Bob", "smiles"]]
    tags = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O"]] if scheme != "none" else [["N", "V", "P", "N"], ["N", "V"]]
    enc = TagEncoder.build(tokens, tags, lowercase=False, zero_digits=False)
    sentences = encode(enc, tokens, tags, max_chars=10)
    return TaggingTask(enc, sentences, None, None, TagSchemes(scheme, scheme), TagTrainConfig(), 8, CPU)


def frame_task() -> FrameTask:
    rng = np.random.default_rng(0)
    sequences = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(4)]
    data = FrameDataset(sequences, np.array([0, 1, 0, 1]), ["a", "b"])
    return FrameTask(data, None, TrainConfig(batch_size=2), 8, CPU)


@pytest.mark.parametrize("make", [lm_task, tagging_task, frame_task], ids=["lm", "tagging", "frames"])
def test_every_use_s_task_satisfies_the_protocol(make) -> None:
    task = make()
    assert isinstance(task, Task)
    assert Task in type(task).__mro__  # subclassed explicitly, so that the optional members have their defaults
    assert isinstance(task.unit, str) and task.num_batches(0) >= 1
    assert next(iter(task.batches(0))) is not None


class Complete:
    """Every member of the protocol, without subclassing it."""

    unit = "ex"
    monitor, report_period, fixed_shapes, carries_state, carry = ("val_loss", "min"), 1, False, False, None
    shards_evaluation = False

    def num_batches(self, epoch):
        return 1

    def batches(self, epoch, start=0):
        yield from ()

    def loss(self, model, batch):
        return torch.zeros(()), 1

    def evaluate(self, model):
        return {}

    def summary(self, metrics):
        return ""

    def callbacks(self):
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class WithoutSummary:
    """Everything but ``summary``."""

    unit = "ex"
    monitor, report_period, fixed_shapes, carries_state, carry = ("val_loss", "min"), 1, False, False, None
    shards_evaluation = False
    num_batches, batches, loss, evaluate = Complete.num_batches, Complete.batches, Complete.loss, Complete.evaluate
    callbacks, state_dict, load_state_dict = Complete.callbacks, Complete.state_dict, Complete.load_state_dict


class WithoutCarry(Complete):
    """Everything but an optional member, which only an explicit subclass inherits."""

    def __getattribute__(self, name):
        if name == "carry":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_a_class_that_lacks_a_member_is_not_a_task() -> None:
    assert isinstance(Complete(), Task)
    assert not isinstance(WithoutSummary(), Task)
    assert not isinstance(WithoutCarry(), Task)


def test_an_explicit_subclass_must_write_the_required_methods() -> None:
    class Partial(Task):
        unit = "ex"

        def num_batches(self, epoch: int) -> int:
            return 1

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_an_explicit_subclass_gets_the_defaults_of_the_optional_members() -> None:
    class Minimal(Task):
        unit = "ex"
        num_batches, batches, loss, evaluate, summary = (
            Complete.num_batches,
            Complete.batches,
            Complete.loss,
            Complete.evaluate,
            Complete.summary,
        )

    task = Minimal()
    assert isinstance(task, Task)
    assert task.monitor == ("val_loss", "min") and task.report_period == 1
    assert task.fixed_shapes is False and task.carries_state is False and task.carry is None
    assert task.callbacks() == [] and task.state_dict() == {} and task.load_state_dict({}) is None


def test_each_task_s_own_settings_override_the_defaults() -> None:
    assert lm_task(pred_period=3).report_period == 3 and lm_task(pred_period=0).report_period == 1
    assert lm_task(sampling="sequential").carries_state and not lm_task(sampling="random").carries_state
    assert lm_task().fixed_shapes
    assert tagging_task("iob2").monitor == ("val_f1", "max") and tagging_task("none").monitor == ("val_acc", "max")
    assert frame_task().monitor == ("val_loss", "min") and not frame_task().fixed_shapes
