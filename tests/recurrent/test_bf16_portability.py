"""bfloat16 on a CPU without AVX512, and the fallbacks from torch's private operators to public ones.

A CPU with AVX2 only (AMD Zen 3) is emulated on any x86 machine: oneDNN honours ONEDNN_MAX_CPU_ISA (and
its older name DNNL_MAX_CPU_ISA), read when torch loads, so those runs happen in a subprocess. Capped
there, oneDNN's bfloat16 inner product, weight packing and LSTM primitives fail to build, as on the
real CPU. ATEN_CPU_CAPABILITY=avx2 alone does not reproduce it (torch.mm and oneDNN keep working).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from rnnlm.cli import main
from rnnlm.lm.config import ModelConfig
from rnnlm.lm.decoder import StepDecoder
from rnnlm.lm.model import RNNLM
from rnnlm.recurrent import engines, gemm
from rnnlm.recurrent.encoder import RecurrentEncoder
from tiny import LM_FLAGS, lm_text

SRC = Path(__file__).resolve().parents[2] / "src"
X86 = platform.machine().lower() in ("x86_64", "amd64")
TEXT = lm_text(60)
TINY = ["--cell", "lstm", *LM_FLAGS, "--pred-period", "0"]


def run_capped(script: str, var: str = "ONEDNN_MAX_CPU_ISA", cwd: Path | None = None) -> dict:
    """Run ``script`` in a fresh Python with oneDNN capped at AVX2; it prints one JSON line last."""
    env = {**os.environ, var: "AVX2", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
@pytest.mark.parametrize("var", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_without_avx512_auto_is_float32_and_bfloat16_products_still_run(var: str) -> None:
    """The capability check sees oneDNN's cap; gemm's bfloat16 products (plain, packed, weight gradient) then
    take torch.mm and give what a float32 product of the same bfloat16 values gives, rounded."""
    got = run_capped(
        """
        import json, torch
        from rnnlm.recurrent import engines, gemm
        torch.manual_seed(0)
        x, W, dy = torch.randn(5, 24).bfloat16(), torch.randn(12, 24).bfloat16(), torch.randn(5, 12).bfloat16()
        want = (x.float() @ W.float().t())
        base, out = torch.randn(5, 12), torch.empty(5, 12)
        err = [
            (gemm.linear(x, W).float() - want).abs().max().item(),
            (gemm.linear(x, gemm.packed(W, 5)).float() - want).abs().max().item(),
            (gemm.add_linear(base, x, gemm.packed(W, 5), out=out) - base - want).abs().max().item(),
            (gemm.weight_grad(dy, x).float() - dy.float().t() @ x.float()).abs().max().item(),
        ]
        print(json.dumps({
            "auto": engines.resolve_matmul_dtype("auto", torch.device("cpu")),
            "bf16": gemm.onednn_works(torch.bfloat16), "f32": gemm.onednn_works(torch.float32),
            "err": err, "scale": want.abs().max().item(),
        }))
        """,
        var,
    )
    assert got["auto"] == "float32"
    if X86 and gemm.onednn_available():
        assert got["bf16"] is False  # the cap took effect, and the check saw it
        assert got["f32"] is True  # float32 keeps oneDNN's kernels
    assert max(got["err"]) <= 0.02 * got["scale"]


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> Path:
    """A run trained here with --matmul-dtype bfloat16 (its config.json says so, as a run does where auto
    chose bfloat16): the run a user copies to a CPU without AVX512."""
    d = tmp_path_factory.mktemp("bf16")
    (d / "a.txt").write_text(TEXT, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(d / "a.txt"), *TINY, "--epochs", "1", "--matmul-dtype", "bfloat16",
                     "--out", str(d / "run")]) == 0  # fmt: skip
    assert json.loads((d / "run" / "config.json").read_text())["model"]["matmul_dtype"] == "bfloat16"
    return d


@pytest.mark.e2e
def test_a_bfloat16_run_evaluates_and_resumes_without_avx512(bf16_run: Path, capsys) -> None:
    """eval (cpu and fused engines) and train --resume of a bfloat16 run, under the cap, give the losses this
    machine gives, within bfloat16 rounding."""
    run = str(bf16_run / "run")
    assert main(["eval", run]) == 0
    here = json.loads(capsys.readouterr().out)["loss"]
    got = run_capped(
        f"""
        import contextlib, io, json
        from rnnlm.cli import main
        losses = []
        for engine in ("cpu", "fused"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["eval", {run!r}, "--engine", engine]) == 0
            losses.append(json.loads(out.getvalue())["loss"])
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--resume", {run!r}, "--epochs", "2"]) == 0
        print(json.dumps({{"losses": losses}}))
        """
    )
    for loss in got["losses"]:
        assert loss == pytest.approx(here, rel=2e-2)
    lines = (bf16_run / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epoch"] == 2  # the resumed epoch ran and was recorded


# -- torch's private operators: a failed call takes the public path -----------------------------------


@pytest.fixture
def fresh_probes(monkeypatch):
    """gemm's per-dtype answers forgotten for the test (and restored after it)."""
    monkeypatch.setattr(gemm, "_linear_ok", {})
    monkeypatch.setattr(gemm, "_reorder_ok", {})


def _raise(*args, **kwargs):
    raise RuntimeError("could not create a primitive descriptor for the inner product")


@pytest.mark.parametrize("broken", [None, _raise])
def test_gemm_takes_torch_mm_where_the_onednn_op_is_missing_or_fails(monkeypatch, fresh_probes, broken) -> None:
    """Missing (None) or failing from the start: the probe says no, and every product is torch.mm's."""
    monkeypatch.setattr(gemm, "_LINEAR", broken)
    monkeypatch.setattr(gemm, "_REORDER", broken)
    torch.manual_seed(0)
    x, W, b = torch.randn(7, 10), torch.randn(6, 10), torch.randn(6)
    assert not gemm.onednn_works(torch.float32)
    assert gemm.packed(W, 7) is W
    torch.testing.assert_close(gemm.linear(x, W, b), torch.addmm(b, x, W.t()), rtol=0, atol=0)


def test_a_onednn_call_that_fails_later_falls_back_once_with_a_warning(monkeypatch, fresh_probes) -> None:
    """The probe passed, then a call raises (a packed weight already made): the result is torch.mm's on the
    plain weight, one warning says so, and later calls go straight to torch.mm."""
    if not gemm.onednn_works(torch.float32):
        pytest.skip("oneDNN's float32 matmul does not run with this torch build")
    torch.manual_seed(0)
    x, W = torch.randn(7, 10), torch.randn(6, 10)
    P = gemm.packed(W, 7)
    calls = []
    monkeypatch.setattr(gemm, "_LINEAR", lambda *a: calls.append(1) or _raise())
    with pytest.warns(RuntimeWarning, match="oneDNN's torch.float32 matmul failed"):
        got = gemm.linear(x, P)
    torch.testing.assert_close(got, x @ W.t(), rtol=1e-6, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(gemm.linear(x, W), x @ W.t(), rtol=0, atol=0)
    assert len(calls) == 1


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("broken", ["missing", "raises"])
def test_the_fused_engine_runs_scratch_where_torch_vf_is_missing_or_fails(monkeypatch, cell, broken) -> None:
    """torch._VF (private): without the kernel, or when it raises, ``fused`` gives scratch's outputs,
    state and gradients, with a warning."""
    monkeypatch.setattr(engines, "_fused_failed", set())
    monkeypatch.setattr(engines, "_vf", lambda c: None if broken == "missing" else _raise)
    torch.manual_seed(0)
    enc = RecurrentEncoder(cell, 4, 5, 2, bidirectional=True, engine="fused")
    x = torch.randn(3, 6, 4)
    results = {}
    for engine in ("fused", "scratch"):
        enc.engine = engine
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out, state = enc(x)
        enc.zero_grad()
        (out.sum() + state[0].square().sum()).backward()
        results[engine] = [out, *state, *(p.grad.clone() for p in enc.parameters())]
        if engine == "fused":
            assert any("running the scratch engine" in str(w.message) for w in seen)
    for a, b in zip(results["fused"], results["scratch"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_step_decoder_is_rebuilt_where_tensors_have_no_version_counter(monkeypatch) -> None:
    """Tensor._version (private) gone: decoder() builds from today's weights every time, never a stale copy."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(cell="lstm", layers=1, hidden=8, embed=4), 7)

    def no_version(self):
        raise AttributeError("_version")

    monkeypatch.setattr(torch.Tensor, "_version", property(no_version))
    ids, state = torch.tensor([2]), model.begin_state(1)
    before = model.decoder()(ids, state)[0]
    with torch.no_grad():
        model.head.bias.add_(1.0)
    torch.testing.assert_close(model.decoder()(ids, state)[0], before + 1.0)
    torch.testing.assert_close(model.decoder()(ids, state)[0], StepDecoder(model)(ids, state)[0], rtol=0, atol=0)


# -- switches scoped to a block -------------------------------------------------------------------------


def test_onednn_switch_is_scoped_and_restores_what_it_found() -> None:
    torch.manual_seed(0)
    x, W = torch.randn(4, 8), torch.randn(3, 8)
    with gemm.onednn(False):
        assert not gemm._onednn(x)
        with gemm.onednn(pack=False):  # None leaves the other setting as it is
            assert not gemm._onednn(x) and gemm.packed(W, 4) is W
        assert gemm._use_packing
    assert gemm._onednn(x) == gemm.onednn_works(torch.float32)
