"""The dependency rules of docs/architecture.md hold, and the check that enforces them can fail.

CI runs ``lint-imports`` on the tree; these tests run it on a copy of the package in which one forbidden import
has been planted, so that a contract which could never fail would show up here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(LINT).exists(), reason="import-linter is not installed (pip install -e '.[dev]')"),
]


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def plant(tree: Path, module: str, line: str) -> None:
    path = tree / "src" / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # planted by the test\n", encoding="utf-8")


def test_the_tree_keeps_every_contract(tmp_path) -> None:
    out = lint(copy_tree(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("rnnlm.core.errors", "import rnnlm.lm.config", "Layers"),  # core reaching up into a use
        ("rnnlm.lm.api", "import rnnlm.share", "Layers"),  # a use reaching up to what knows every use
        ("rnnlm.lm.api", "import rnnlm.serve.app", "Layers"),  # a use reaching up into the web page
        ("rnnlm.training.trainer", "import rnnlm.recurrent.state", "training and recurrent are independent"),
        ("rnnlm.lm.task", "import rnnlm.tagging.schemes", "Uses do not import each other"),
        ("rnnlm.tagging.task", "import rnnlm.frames.prep", "Taggers do not import frame models"),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(tmp_path, module, line, contract) -> None:
    tree = copy_tree(tmp_path)
    plant(tree, module, line)
    out = lint(tree)
    assert out.returncode != 0
    broken = [s for s in out.stdout.splitlines() if s.endswith("BROKEN")]
    assert any(s.startswith(contract) for s in broken), out.stdout
