"""The package as users get it: ``python -m build`` makes an sdist and a wheel that ship the C sources, and the wheel
installed in a fresh virtual environment with torch alone runs the quick start of every use (train, generate, tag
predict, frames predict), compiling its kernels into the user cache.

The fresh environment's packages come from pip's configured sources, the same that CI's own install reads (torch
from the machine's wheel folder there). It takes about 30 s on a quiet 2-core machine, most of it unpacking torch
(``--no-compile`` skips writing its thousands of .pyc files).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import rnnlm
from tiny import FRAMES_FLAGS, LM_FLAGS, LM_TEXT, TAGGER_FLAGS, ner_file, write_ts

ROOT = Path(__file__).resolve().parents[1]
C_SOURCES = {"decode.c", "lstm_step.c", "lstm_infer.c", "fastmath.h"}

pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, input=stdin, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """An sdist and a wheel, built from this checkout (without an isolated build environment: no download)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], out, env)
    return out


def test_the_sdist_and_the_wheel_ship_the_c_sources(dist):
    (wheel,) = dist.glob("rnnlm-*.whl")
    (sdist,) = dist.glob("rnnlm-*.tar.gz")
    assert wheel.name == f"rnnlm-{rnnlm.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert {Path(n).name for n in names if "/csrc/" in n} == C_SOURCES
    assert "rnnlm/__main__.py" in names and "rnnlm/share.py" in names
    with tarfile.open(sdist) as tar:
        assert {Path(n).name for n in tar.getnames() if "/csrc/" in n} >= C_SOURCES


def test_the_wheel_installed_alone_with_torch_runs_every_use(dist, tmp_path):
    (wheel,) = dist.glob("rnnlm-*.whl")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"RNNLM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    py, rnnlm_cmd = str(venv / "bin" / "python"), str(venv / "bin" / "rnnlm")
    torch_version = __import__("torch").__version__.split("+")[0]
    pip = [py, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
    run([*pip, f"torch=={torch_version}", str(wheel)], tmp_path, env)
    where = run([py, "-c", "import rnnlm; print(rnnlm.__file__)"], tmp_path, env)
    assert str(venv) in where  # the installed wheel, not this checkout

    # Every process imports torch anew, which is most of a command's time here: one process trains all three uses
    # through the command line's main (and tags, reading stdin), then the two entry points run one command each.
    (tmp_path / "text.txt").write_text(LM_TEXT, encoding="utf-8")
    ner_file(tmp_path / "ner.txt", 16, seed=0)
    write_ts(tmp_path / "toy.ts", 12, seed=0)
    commands = [
        ["train", "text.txt", *LM_FLAGS, "--max-steps", "3", "--pred-period", "0", "--out", "lm"],
        ["tag", "train", "ner.txt", *TAGGER_FLAGS, "--epochs", "1", "--out", "ner"],
        ["tag", "predict", "ner", "--json"],
        ["frames", "train", "toy.ts", *FRAMES_FLAGS, "--epochs", "1", "--ensemble", "1", "--no-refit", "--out", "jv"],
    ]
    script = f"import sys; from rnnlm.cli import main; sys.exit(max(main(c) for c in {commands!r}))"
    out = run([py, "-c", script], tmp_path, env, stdin="Anna visited Oslo .\n")
    assert '"tokens": ["Anna", "visited", "Oslo", "."]' in out

    text = run([py, "-m", "rnnlm", "generate", "lm", "--prefix", "row", "--length", "30", "--seed", "0"], tmp_path, env)
    assert text.startswith("row") and len(text) >= 30
    assert list((tmp_path / "cache" / "kernels").iterdir()), "the decoder's C kernel was compiled into the cache"
    predicted = run([rnnlm_cmd, "frames", "predict", "jv", "toy.ts"], tmp_path, env).split()
    assert len(predicted) == 12 and set(predicted) <= {"up", "down", "flat"}
