"""One way in for every use: the command line and the Python API both train through ``<use>.run.train(cfg,
resume, log)``, and the Python API that the README shows is importable as it is written there."""

from __future__ import annotations

import contextlib
import inspect
import re
import typing
from pathlib import Path

import pytest

import rnnlm
from rnnlm import frames, tagging
from rnnlm.cli import main
from rnnlm.frames import run as frames_run
from rnnlm.frames.config import FramesRunConfig
from rnnlm.lm import run as lm_run
from rnnlm.lm.config import RunConfig
from rnnlm.tagging import run as tag_run
from rnnlm.tagging.config import TagRunConfig
from rnnlm.training import runs

README = Path(__file__).resolve().parents[1] / "README.md"
USES = {"lm": (lm_run, RunConfig), "tagging": (tag_run, TagRunConfig), "frames": (frames_run, FramesRunConfig)}


def test_every_use_trains_a_run_with_one_signature() -> None:
    for name, (module, _) in USES.items():
        params = list(inspect.signature(module.train).parameters.values())
        assert [p.name for p in params[:3]] == ["cfg", "resume", "log"], name
        assert params[1].default is None and params[2].default is print, name
        assert all(p.default is None for p in params[3:]), name  # anything more is optional (a frame run's arrays)


class Reached(Exception):
    pass


@pytest.fixture
def reached(monkeypatch):
    """Each use's run.train replaced by one that records its config and stops there: nothing is trained."""
    calls: list[tuple[str, object]] = []
    for name, (module, _) in USES.items():

        def record(cfg, resume=None, log=print, *rest, name=name):
            calls.append((name, cfg))
            raise Reached

        monkeypatch.setattr(module, "train", record)
    return calls


def test_the_cli_and_the_api_train_through_run_train(reached, tmp_path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("pack my box with five dozen liquor jugs\n" * 20, encoding="utf-8")
    tagged = tmp_path / "t.conll"
    tagged.write_text("Anna NNP B-NP B-PER\nsings VBZ B-VP O\n\n", encoding="utf-8")
    frame_file = tmp_path / "f.ts"
    out = str(tmp_path / "run")
    calls = {
        "lm": [lambda: main(["train", str(text), "--out", out]), lambda: rnnlm.train(str(text), out=out)],
        "tagging": [lambda: main(["tag", "train", str(tagged), "--out", out]), lambda: tagging.train(tagged, out=out)],
        "frames": [
            lambda: main(["frames", "train", str(frame_file), "--out", out]),
            lambda: frames.train(str(frame_file), out=out),
        ],
    }
    for name, (_, config) in USES.items():
        for call in calls[name]:
            reached.clear()
            with contextlib.suppress(Reached):  # the API lets it through; the CLI reports it (as a bug)
                call()
            ((use, cfg),) = reached
            assert use == name and isinstance(cfg, config)


def test_a_run_s_result_says_where_it_is_how_it_ran_and_why_it_stopped() -> None:
    for name, (module, _) in USES.items():
        result = typing.get_type_hints(module.train)["return"]
        assert issubclass(result, runs.TrainResult), name


def test_the_python_api_in_the_readme_is_there() -> None:
    """Every ``rnnlm.x``, ``tagging.x`` and ``frames.x`` that the README's Python blocks call exists."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    modules = {"rnnlm": rnnlm, "tagging": tagging, "frames": frames}
    called = {(m, f) for block in blocks for m, f in re.findall(r"\b(rnnlm|tagging|frames)\.(\w+)\(", block)}
    assert {("tagging", "train"), ("tagging", "load"), ("frames", "train"), ("rnnlm", "train")} <= called
    missing = sorted(f"{m}.{f}" for m, f in called if not callable(getattr(modules[m], f, None)))
    assert not missing, missing
    assert tagging.train.__module__ == "rnnlm.tagging.api" and frames.train.__module__ == "rnnlm.frames.api"
