"""Fault injection: kill -9 a training run at random moments, resume it, repeat; then check what is left.

Not a test: it measures and prints (tests/bench/test_faults.py runs a short version in CI). For one use (``lm``: a
language model; ``tag``: a tagger ensemble of 2 members trained by 2 worker processes; ``frames``: a frame ensemble
of 2 members with their refits), with tiny settings and a step limit:

1. a reference run trains uninterrupted;
2. each trial starts the same run in a new folder and kills its process group with SIGKILL ``--kills-per-trial``
   times, each time at a random moment: after a random delay (anywhere from start-up to the end), or inside a
   checkpoint write, half of its data written or just before its rename (``RNNLM_FAULT_PAUSE``, core/atomic.py,
   pauses the N-th such write there and the benchmark kills it while it waits); after each kill the next start
   is ``--resume`` when the folder holds a run (config.json), else the new run again;
3. after each kill every ``*.safetensors`` in the folder must load (0 corrupt), and every best checkpoint (and
   final model) that existed before the kill must still exist and load (0 lost); a start that fails with an
   error instead of being killed is an unrecoverable run;
4. after the last kill the run is resumed to its end, and its final weights must equal the reference's bit for bit.

    python bench/faults.py lm --kills 50                    # about 15 s per kill on a busy 2-core machine
    python bench/faults.py tag --kills 50 --json bench/results/faults_tag.json

The result (JSON) holds every kill: its mode, delay, what the process was doing (the file a paused write was
writing), the checks, and per trial whether the final weights were bit-exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import machine  # bench/machine.py
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import CheckpointError

TINY_LM = "--layers 1 --hidden 16 --embed 8 --batch-size 4 --seq-len 16 --pred-period 0"
TINY_TAGGER = "--hidden 16 --word-dim 16 --char-filters 8 --char-dim 8 --dropout 0.1 --batch-size 8 --lr 0.02"
TINY_FRAMES = "--hidden 8 --proj 8 --batch-size 8 --fcn 8"
COMMON = "--no-progress --threads 1 --save-every 0"


def write_data(folder: Path) -> None:
    """Tiny data for the three uses, made here (the benchmark reads nothing from $RNNLM_DATA)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"row {i}: pack my box with five dozen liquor jugs.\n" for i in range(100)]
    (folder / "corpus.txt").write_text("".join(lines), encoding="utf-8")
    rng = random.Random(0)
    for name, n in (("ner.txt", 40), ("dev.txt", 10)):
        out = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            person = rng.choice([["Anna"], ["Bob", "Smith"], ["Carla"]])
            place = rng.choice([["Paris"], ["New", "York"], ["Oslo"]])
            tags = [f"{'B' if i == 0 else 'I'}-PER" for i in range(len(person))] + ["O"]
            tags += [f"{'B' if i == 0 else 'I'}-LOC" for i in range(len(place))] + ["O"]
            words = [*person, rng.choice(["visited", "left", "saw"]), *place, "."]
            out += [f"{w} X X {t}" for w, t in zip(words, tags, strict=True)] + [""]
        (folder / name).write_text("\n".join(out), encoding="utf-8")
    nprng = np.random.default_rng(0)
    ts = ["@problemName toy", "@dimensions 2", "@classLabel true up down flat", "@data"]
    for i in range(30):
        label, t = ("up", "down", "flat")[i % 3], int(nprng.integers(4, 10))
        ramp = {"up": 1.0, "down": -1.0, "flat": 0.0}[label] * np.linspace(-1, 1, t) + 0.1 * nprng.standard_normal(t)
        dims = [ramp, nprng.standard_normal(t)]
        ts.append(":".join(",".join(f"{v:.5f}" for v in d) for d in dims) + f":{label}")
    (folder / "train.ts").write_text("\n".join(ts) + "\n", encoding="utf-8")


STEPS = {"lm": 60, "tag": 30, "frames": 24}  # each member's step limit; a metrics line and a save every 5th or 4th


def commands(use: str, data: Path, steps: int) -> tuple[list[str], list[str], str]:
    """(the new run's arguments without --out, the resume's subcommand, the file that holds the final weights)."""
    cli = [sys.executable, "-m", "rnnlm.cli"]
    if use == "lm":
        args = f"train {data / 'corpus.txt'} {TINY_LM} {COMMON} --max-steps {steps} --log-every 5"
        return [*cli, *args.split()], [*cli, "train"], ckpt.LAST
    if use == "tag":
        args = f"tag train {data / 'ner.txt'} --dev {data / 'dev.txt'} {TINY_TAGGER} {COMMON} --ensemble 2 --jobs 2"
        args += f" --max-steps {steps} --log-every 5"
        return [*cli, *args.split()], [*cli, "tag", "train"], "model.safetensors"
    args = f"frames train {data / 'train.ts'} {TINY_FRAMES} {COMMON} --ensemble 2 --max-steps {steps} --log-every 4"
    return [*cli, *args.split()], [*cli, "frames", "train"], "model.safetensors"


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A run in a process group of its own, so that one SIGKILL takes its worker processes too."""
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def checkpoints(run: Path) -> dict[str, str]:
    """Every checkpoint file in the run (relative path -> 'ok' or why it does not load)."""
    out = {}
    for path in sorted(run.rglob("*.safetensors")):
        try:
            ckpt.load_checkpoint(path)
            out[str(path.relative_to(run))] = "ok"
        except CheckpointError as e:
            out[str(path.relative_to(run))] = str(e)
    return out


def kept(name: str) -> bool:
    """Files a kill must never take away once they exist: best checkpoints and final models."""
    return Path(name).name in (ckpt.BEST, "model.safetensors")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_weights(path)[0]


def bit_exact(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_cycle(
    argv: list[str], log: Path, pause: Path, mode: str, delay: float, nth: int, limit: float
) -> tuple[str, int | None, str]:
    """Start the run, kill it as ``mode`` says; returns (what happened, the exit code when it ended by itself,
    the file a paused write was writing)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for marker in [*pause.glob("paused.*"), *pause.glob("count.*")]:
        marker.unlink()
    if mode != "time":
        env["RNNLM_FAULT_PAUSE"] = f"{pause}:{mode}:{nth}"
    proc = start(argv, log, env)
    began = time.monotonic()
    while True:
        rc = proc.poll()
        if rc is not None:
            return "ended", rc, ""
        markers = list(pause.glob("paused.*"))
        if mode != "time" and markers:
            target = markers[0].read_text(encoding="utf-8") if markers[0].stat().st_size else "?"
            kill_group(proc)
            return "killed", None, target
        if mode == "time" and time.monotonic() - began >= delay:
            kill_group(proc)
            return "killed", None, ""
        if time.monotonic() - began > limit:
            kill_group(proc)
            return "hung", None, ""
        time.sleep(0.02)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("use", choices=["lm", "tag", "frames"])
    p.add_argument("--kills", type=int, default=50, help="kills in all, over the trials")
    p.add_argument("--kills-per-trial", type=int, default=5, help="kills before a trial's run may finish")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/faults"), help="folder for the data and the runs")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--budget", type=float, default=0, help="stop starting trials after this many seconds (0: none)")
    p.add_argument("--steps", type=int, help="the run's step limit (default: lm 60, tag 30, frames 24)")
    p.add_argument("--modes", default="time,time,write,rename", help="kill modes drawn from, with repeats as weights")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = args.work / args.use
    data = work / "data"
    write_data(data)
    new, resume, final = commands(args.use, data, args.steps or STEPS[args.use])
    modes = args.modes.split(",")
    pause = work / "pause"
    pause.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ref, facts = work / "reference", work / "reference.json"
    if not (ref / final).is_file() or not facts.is_file():
        shutil.rmtree(ref, ignore_errors=True)
        # counting its checkpoint writes (every process of the run counts in pause/count.rename), so that a paused
        # kill can land on any of them, in any member: a fresh run makes the most writes, a resume fewer
        for marker in pause.glob("count.*"):
            marker.unlink()
        env = {**os.environ, "RNNLM_FAULT_PAUSE": f"{pause}:rename:0"}
        subprocess.run([*new, "--out", str(ref)], check=True, stdout=subprocess.DEVNULL, env=env)
        writes = (pause / "count.rename").stat().st_size
        facts.write_text(json.dumps({"seconds": time.monotonic() - t0, "checkpoint_writes": writes}))
    reference = json.loads(facts.read_text())
    ref_seconds, writes = reference["seconds"], reference["checkpoint_writes"]
    print(f"{args.use}: reference run in {ref_seconds:.1f} s, {writes} checkpoint writes", flush=True)
    kills: list[dict] = []
    trials: list[dict] = []
    began = time.monotonic()
    while len(kills) < args.kills and (not args.budget or time.monotonic() - began < args.budget):
        trial = work / f"trial{len(trials)}"
        run = trial / "run"
        trial.mkdir(parents=True, exist_ok=True)
        log = trial / "log.txt"
        record = {"trial": len(trials), "kills": 0, "unrecoverable": [], "exact": None}
        while record["kills"] < args.kills_per_trial and len(kills) < args.kills:
            argv = [*resume, "--resume", str(run)] if (run / ckpt.CONFIG).is_file() else [*new, "--out", str(run)]
            before = checkpoints(run) if run.is_dir() else {}
            mode = rng.choice(modes)
            delay, nth = rng.uniform(0, ref_seconds * 1.1), rng.randint(1, writes)
            what, rc, target = one_cycle(argv, log, pause, mode, delay, nth, limit=ref_seconds * 10 + 60)
            if what == "ended":
                if rc != 0:
                    record["unrecoverable"].append({"argv": argv[3:], "rc": rc, "log": log.read_text()[-2000:]})
                break  # the run finished (or failed) before this kill came
            after = checkpoints(run) if run.is_dir() else {}
            corrupt = [k for k, v in after.items() if v != "ok"]
            lost = [k for k, v in before.items() if v == "ok" and kept(k) and after.get(k) != "ok"]
            kills.append(
                {
                    "trial": record["trial"],
                    "mode": mode,
                    "delay_s": round(delay, 2) if mode == "time" else None,
                    "nth_write": nth if mode != "time" else None,
                    "paused_in": target or None,
                    "hung": what == "hung",
                    "resume": "--resume" in argv,
                    "checkpoints": len(after),
                    "corrupt": corrupt,
                    "lost_best": lost,
                }
            )
            record["kills"] += 1
            print(
                f"trial {record['trial']} kill {record['kills']}: {mode:6} "
                f"{'at ' + str(round(delay, 1)) + ' s' if mode == 'time' else 'in ' + (target or '?')} | "
                f"{len(after)} checkpoints, {len(corrupt)} corrupt, {len(lost)} lost",
                flush=True,
            )
        # To the end, without faults: a resume (or the new run, when no kill left a run behind).
        for _ in range(3):  # an unfinished ensemble may need one resume per member left
            if (run / final).is_file() and args.use != "lm":
                break
            argv = [*resume, "--resume", str(run)] if (run / ckpt.CONFIG).is_file() else [*new, "--out", str(run)]
            with open(log, "ab") as out:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
            if done.returncode != 0:
                tail = log.read_text()[-2000:]
                record["unrecoverable"].append({"argv": argv[3:], "rc": done.returncode, "log": tail})
                break
            if args.use == "lm":
                break
        record["exact"] = (run / final).is_file() and bit_exact(run / final, ref / final)
        if args.use == "lm" and record["exact"]:
            record["exact_best"] = bit_exact(run / ckpt.BEST, ref / ckpt.BEST)
        trials.append(record)
        print(f"trial {record['trial']}: {record['kills']} kills, bit-exact: {record['exact']}", flush=True)
    summary = {
        "use": args.use,
        "machine": machine.kind(machine.describe()),
        "kills": len(kills),
        "by_mode": {m: sum(k["mode"] == m for k in kills) for m in ("time", "write", "rename")},
        "paused_in_checkpoint_writes": sum(bool(k["paused_in"]) for k in kills),
        "trials": len(trials),
        "unrecoverable_runs": sum(bool(t["unrecoverable"]) for t in trials),
        "corrupt_checkpoints": sum(len(k["corrupt"]) for k in kills),
        "lost_best_checkpoints": sum(len(k["lost_best"]) for k in kills),
        "hung": sum(k["hung"] for k in kills),
        "bit_exact_trials": sum(bool(t["exact"]) for t in trials),
        "reference_run_s": round(ref_seconds, 1),
        "reference_checkpoint_writes": writes,
        "wall_s": round(time.monotonic() - t0, 1),
        "command": " ".join(sys.argv),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "trials": trials, "kills": kills}, indent=1) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
