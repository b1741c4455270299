"""One rank of the data-parallel tests (test_distributed.py), started by torchrun: trains the runs a JSON spec
lists, through each use's Python API, with one thread (in float64 unless a job says otherwise), so that the runs
can be compared with a single process to round-off."""

from __future__ import annotations

import json
import sys

import torch


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    torch.set_num_threads(1)
    import rnnlm
    from rnnlm import frames, tagging

    train = {"lm": rnnlm.train, "tag": tagging.train, "frames": frames.train}
    for job in spec["jobs"]:
        torch.set_default_dtype(getattr(torch, job.get("dtype", "float64")))
        train[job["use"]](job["data"], resume=job.get("resume"), log=lambda s: None, **job.get("settings", {}))


if __name__ == "__main__":
    main(sys.argv[1])
