"""Scale-out measurements (issue 25): data-parallel ranks under torchrun, and corpora larger than memory.

    python bench/scale.py equality            # 2 ranks (gloo) vs 1 process, float64: loss trajectories over 50 steps
    python bench/scale.py throughput          # 2 ranks x 1 thread vs 1 process x 1 thread, LSTM 2 x 512: tokens/s
    python bench/scale.py large --mb 2048     # a large text built in /tmp: prepare MB/s, peak RSS, cached start
    python bench/scale.py kill                # kill -9 of one rank mid-run: how soon the other exits; the resume

Each prints a JSON line and, with --json PATH, appends it to PATH (bench/results/scale_*.json). Every run is a
subprocess (torchrun, or `python -m rnnlm`), as a user would start it; the machine is named in each result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RNNLM_DATA", ROOT.parent / "shared" / "data"))
WORKER = ROOT / "tests" / "training" / "dist_worker.py"


def env(threads: int = 1) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), e.get("PYTHONPATH", "")])
    return {**e, "OMP_NUM_THREADS": str(threads)}


def torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), *args]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_jobs(n: int, jobs: list[dict], work: Path) -> None:
    """Train ``jobs`` (tests/training/dist_worker.py's spec) on ``n`` ranks, or in one process when n is 1."""
    spec = work / f"spec{n}.json"
    spec.write_text(json.dumps({"jobs": jobs}))
    cmd = torchrun(n, str(WORKER), str(spec)) if n > 1 else [sys.executable, str(WORKER), str(spec)]
    subprocess.run(cmd, env=env(), check=True, capture_output=True, text=True)


def equality(a: argparse.Namespace, work: Path) -> dict:
    """The same global batch on 2 ranks and in 1 process, float64: the largest gap between their loss lines."""
    text = DATA / "timemachine.txt"
    base = {"preset": "plain", "layers": 1, "hidden": 32, "embed": 16, "batch_size": 8, "seq_len": 32}
    base |= {"engine": "scratch", "max_steps": 50, "log_every": 5, "progress": False}
    out = {}
    for sampling in ("sequential", "random"):
        for n in (1, 2):
            job = {
                "use": "lm",
                "data": str(text),
                "settings": {**base, "sampling": sampling, "out": str(work / f"{sampling}{n}")},
            }
            run_jobs(n, [job], work)
        one, two = metrics(work / f"{sampling}1"), metrics(work / f"{sampling}2")
        gap = max(abs(x[k] - y[k]) for x, y in zip(one, two, strict=True) for k in ("train_loss", "val_loss"))
        out[sampling] = {"steps": one[-1]["step"], "lines": len(one), "max_abs_loss_gap": gap}
    return {"what": "equality", **out}


def throughput(a: argparse.Namespace, work: Path) -> dict:
    """Tokens/s of one process and of 2 ranks (1 thread each) on the same global batch, LSTM 2 x 512."""
    text = DATA / "tinyshakespeare.txt"
    flags = ["--preset", "plain", "--cell", "lstm", "--layers", "2", "--hidden", "512", "--embed", "128"]
    flags += ["--batch-size", str(a.batch), "--seq-len", "64", "--max-steps", str(a.steps), "--log-every", str(a.steps)]
    flags += ["--threads", "1", "--no-progress", "--sampling", "sequential"]
    out = {}
    for n in (1, 2):
        run = work / f"tp{n}"
        args = ["-m", "rnnlm", "train", str(text), *flags, "--val-fraction", "0.001", "--out", str(run)]
        cmd = torchrun(n, *args) if n > 1 else [sys.executable, *args]
        subprocess.run(cmd, env=env(), check=True, capture_output=True, text=True)
        out[f"ranks{n}_tokens_per_s"] = metrics(run)[-1]["tokens_per_s"]
    out["speedup"] = out["ranks2_tokens_per_s"] / out["ranks1_tokens_per_s"]
    return {"what": "throughput", "model": "lstm 2x512, embed 128", "global_batch": a.batch, "seq_len": 64, **out}


# `python -m rnnlm ...` that reports its own peak resident memory on stderr as it exits
PEAK = (
    "import resource, runpy, sys\n"
    "try:\n    runpy.run_module('rnnlm', run_name='__main__', alter_sys=True)\n"
    "finally:\n    u = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    print('peak_rss_kb', u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)\n"
)


def rnnlm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", PEAK, *args]


def peak_mb(stderr: str) -> float:
    return int(next(line.split()[1] for line in stderr.splitlines() if line.startswith("peak_rss_kb"))) / 1024


def cpu_s(stderr: str) -> float:
    """The CPU seconds the command used: on a shared machine, a steadier measure than its wall time."""
    return float(next(line.split()[2] for line in stderr.splitlines() if line.startswith("peak_rss_kb")))


def large(a: argparse.Namespace, work: Path) -> dict:
    """Build a text of --mb MB from the shared corpora in /tmp, prepare it, then start training on it cached."""
    text = Path(tempfile.gettempdir()) / f"rnnlm-scale-{a.mb}mb.txt"
    sources = [DATA / "tinyshakespeare.txt", DATA / "timemachine.txt", DATA / "jaychou_lyrics.txt"]
    sources += sorted((DATA / "ptb").glob("*.txt")) + sorted((DATA / "wikitext-2").glob("*.tokens"))
    blob = b"".join(p.read_bytes() for p in sources if p.is_file())
    cache = work / "cache"
    try:
        with open(text, "wb") as f:
            while f.tell() < a.mb << 20:
                f.write(blob)
        size_mb = text.stat().st_size / 1e6
        e = {**env(1), "RNNLM_CACHE": str(cache)}
        # the same cache directory that `rnnlm train` reads (no --out): prepare, then a cached start
        t0 = time.perf_counter()
        done = subprocess.run(rnnlm_cmd("prepare", str(text)), env=e, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr[-2000:]
        result = {"what": "large", "text_mb": round(size_mb, 1), "prepare_s": round(seconds, 1)}
        result |= {"prepare_mb_per_s": round(size_mb / seconds, 1), "prepare_peak_rss_mb": round(peak_mb(done.stderr))}
        result |= {
            "prepare_cpu_s": round(cpu_s(done.stderr), 1),
            "prepare_mb_per_cpu_s": round(size_mb / cpu_s(done.stderr), 1),
        }
        result |= {"prepare_log": done.stdout.strip().splitlines()[-1]}
        t0 = time.perf_counter()
        again = subprocess.run(rnnlm_cmd("prepare", str(text)), env=e, capture_output=True, text=True)
        result |= {"cached_prepare_s": round(time.perf_counter() - t0, 2), "cached_log": again.stdout.strip()[-200:]}
        run = work / "large_run"
        flags = ["--preset", "plain", "--layers", "1", "--hidden", "256", "--batch-size", "32", "--seq-len", "64"]
        # no validation: the first metrics line comes right after the first step (an evaluation would come first)
        flags += ["--max-steps", "5", "--log-every", "1", "--val-fraction", "0", "--threads", "1", "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import rnnlm.cli"], env=e, check=True)
        result |= {"import_s": round(time.perf_counter() - t0, 2)}  # what any start costs before rnnlm does anything
        t0 = time.perf_counter()
        cmd = rnnlm_cmd("train", str(text), *flags, "--out", str(run))
        proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = None
        while proc.poll() is None:
            if first is None and (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size:
                first = time.perf_counter() - t0
            time.sleep(0.05)
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        data_line = next(line for line in out.splitlines() if line.startswith("data:"))
        first_step = metrics(run)[0]["elapsed_s"]  # the first step's own time, evaluation excluded
        result |= {"train_peak_rss_mb": round(peak_mb(err)), "start_to_first_metrics_line_s": round(first or -1, 2)}
        result |= {"first_step_s": first_step}
        result |= {"train_wall_s": round(time.perf_counter() - t0, 1), "data_line": data_line}
        return result
    finally:
        text.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)


def kill(a: argparse.Namespace, work: Path) -> dict:
    """kill -9 of rank 1 after the first checkpoint: seconds until the launcher exits, and a resume from there."""
    text = DATA / "tinyshakespeare.txt"
    run = work / "kill_run"
    flags = ["--preset", "plain", "--layers", "1", "--hidden", "64", "--batch-size", "16", "--seq-len", "32"]
    flags += ["--log-every", "20", "--save-every", "0", "--no-progress", "--val-fraction", "0.01"]
    cmd = torchrun(2, "-m", "rnnlm", "train", str(text), *flags, "--max-steps", "100000", "--out", str(run))
    e = {**env(1), "RNNLM_DIST_TIMEOUT": "30"}
    proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (run / "last.safetensors").is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    time.sleep(2)
    kids = [int(p) for t in Path(f"/proc/{proc.pid}/task").iterdir() for p in (t / "children").read_text().split()]
    rank1 = next(p for p in kids if b"RANK=1" in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))
    t0 = time.perf_counter()
    os.kill(rank1, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    exit_s = time.perf_counter() - t0
    message = next((line for line in err.splitlines() if "rnnlm: error" in line), "")
    step = metrics(run)[-1]["step"]
    resume = torchrun(2, "-m", "rnnlm", "train", "--resume", str(run), "--max-steps", str(step + 20))
    again = subprocess.run(resume, env=e, capture_output=True, text=True)
    return {
        "what": "kill",
        "exit_s_after_kill": round(exit_s, 2),
        "launcher_rc": proc.returncode,
        "message": message[:300],
        "resume_rc": again.returncode,
        "resumed_to_step": metrics(run)[-1]["step"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("equality", "throughput", "large", "kill"))
    p.add_argument("--mb", type=int, default=2048, help="large: the text's size in MB")
    p.add_argument("--steps", type=int, default=20, help="throughput: steps per run")
    p.add_argument("--batch", type=int, default=32, help="throughput: the global batch")
    p.add_argument("--json", type=Path, help="append the result line to this file")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            **globals()[a.what](a, Path(tmp)),
            "machine": machine.describe(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    line = json.dumps(result)
    print(line)
    if a.json:
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
