"""Spoken words from sound files: the default audio recipe on the spoken digits, clean and in noise, and the
real-time factor of streaming.

Not a test: it measures and prints. Each seed is one whole `rnnlm frames train` run on spoken_words/train (its
validation split drawn from it), scored once on test/ (speakers never heard in training) and on a noisy copy of
test/ (white noise mixed in at --snr dB, made in a temporary folder, never in the repository). Then the first
run streams the test files, joined into one recording, in chunks of 0.1 s (a label of the last 1 s every 0.2 s,
the defaults), and the real-time factor (computing time over audio time) is measured with --threads threads
(the streamer runs its small model on one of them).

    python bench/frames_audio.py                          # seeds 0-2, the default recipe
    python bench/frames_audio.py --set noise_prob=0 --seeds 1   # what noise mixing adds
    python bench/frames_audio.py --seeds 1 --first-seed 2       # one seed, e.g. seeds side by side in processes

Torch runs with one thread for training unless --threads-train says otherwise (see bench/frames.py: on models
this small, a second thread only adds synchronization on a shared machine). The process's CPU time is reported
beside the wall time: on a machine shared with other jobs the wall time is longer than an idle machine's, and
one thread's CPU time is about what the run takes alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from frames import parse_setting  # noqa: E402
from rnnlm.frames import api as frames  # noqa: E402
from rnnlm.frames.audio import list_audio, read_audio  # noqa: E402
from rnnlm.frames.augment import mix_at_snr  # noqa: E402
from rnnlm.frames.stream import Streamer  # noqa: E402

DATA = Path(os.environ.get("RNNLM_DATA", "../shared/data")) / "spoken_words"


def noisy_copy(src: Path, dst: Path, snr: float, seed: int = 1234) -> Path:
    """dst/<class>/<file>.wav: each file of src with white noise mixed in at snr dB (augment.mix_at_snr)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for item in list_audio(src):
        info = sf.info(str(item.path))
        wave = read_audio(item.path, info.samplerate)
        out = dst / item.label / item.path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), np.clip(mix_at_snr(wave, rng.standard_normal(len(wave)), snr), -1, 1), info.samplerate)
    return dst


def real_time_factor(model: frames.FrameModel, folder: Path, seconds: float, threads: int) -> dict[str, float]:
    """Stream the files of folder, joined up to ``seconds`` of audio, in chunks of 0.1 s."""
    rate = model.config.audio.sample_rate
    waves, total = [], 0
    for item in list_audio(folder):
        waves.append(read_audio(item.path, rate))
        total += len(waves[-1])
        if total >= seconds * rate:
            break
    audio = np.concatenate(waves)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s = Streamer(model)  # the defaults: a 1 s window every 0.2 s
        cpu = time.process_time()
        chunk = rate // 10
        for i in range(0, len(audio), chunk):
            s.push(audio[i : i + chunk])
        s.flush()
        cpu = time.process_time() - cpu
    finally:
        torch.set_num_threads(old)
    duration = len(audio) / rate
    return {"audio_s": duration, "rtf_wall": s.real_time_factor(), "rtf_cpu": cpu / duration}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="Seeds first-seed .. first-seed + seeds - 1.")
    p.add_argument("--snr", type=float, default=15.0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="A training setting.")
    p.add_argument("--threads-train", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="Threads while streaming.")
    p.add_argument("--stream-seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = p.parse_args()
    settings = dict(parse_setting(s) for s in args.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        noisy = noisy_copy(args.data / "test", Path(tmp) / "noisy", args.snr)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            wall, cpu = time.perf_counter(), time.process_time()
            model = frames.train(
                args.data / "train",
                out=Path(tmp) / f"run{seed}",
                seed=seed,
                threads=args.threads_train,
                progress=False,
                log=lambda s: None,
                **settings,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            clean = model.evaluate(args.data / "test")["accuracy"]
            loud = model.evaluate(noisy)["accuracy"]
            epoch = float(model.checkpoint.get("epoch", "nan"))
            rows.append({"seed": seed, "test": clean, "noisy": loud, "wall_s": wall, "cpu_s": cpu, "epoch": epoch})
            print(
                f"seed {seed}: test {clean:.4f} | noisy ({args.snr:g} dB) {loud:.4f} | training {wall:.0f} s wall, "
                f"{cpu:.0f} s CPU | best epoch {epoch:g}",
                flush=True,
            )
            if seed == args.first_seed:
                rtf = real_time_factor(model, args.data / "test", args.stream_seconds, args.threads)
                print(
                    f"streaming {rtf['audio_s']:.0f} s of audio, {args.threads} threads: real-time factor "
                    f"{rtf['rtf_wall']:.4f} (wall), {rtf['rtf_cpu']:.4f} (CPU)",
                    flush=True,
                )
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("test", "noisy", "wall_s", "cpu_s")}
    print(
        f"mean of {len(rows)}: test {mean['test']:.4f} | noisy {mean['noisy']:.4f} | training {mean['wall_s']:.0f} s "
        f"wall, {mean['cpu_s']:.0f} s CPU"
    )
    if args.out:
        result = {"settings": settings, "snr": args.snr, "runs": rows, "mean": mean, "stream": rtf}
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
