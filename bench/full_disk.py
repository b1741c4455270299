"""A real full disk: a language-model run on a small tmpfs that fills up, then space freed and the run resumed.

Not a test (mounting a tmpfs needs root): tests/core/test_atomic_faults.py injects ENOSPC at every write, fsync and
rename instead. Here the disk really fills. For each amount of free space, a filler file leaves only that much on the
tmpfs, the run starts there and must either finish or stop with rnnlm's one-line error (exit status 2, "No space
left on device") with every checkpoint in the folder whole; then the filler is removed, the run resumed, and its
final weights must equal an uninterrupted run's bit for bit.

    sudo mount -t tmpfs -o size=600k tmpfs /mnt/small
    python bench/full_disk.py /mnt/small --json bench/results/full_disk.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import bit_exact, checkpoints, commands, write_data  # noqa: E402  (bench/ is not a package)
from rnnlm.core import checkpoint as ckpt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tmpfs", type=Path, help="an empty, small file system (a tmpfs of a few hundred KB)")
    p.add_argument("--free", default="16,24,32,40,48,56,64,80,96,128,160,200", help="KB left free, one run each")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnlm-full-disk-"))
    write_data(work / "data")
    new, resume, final = commands("lm", work / "data", 60)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*new, "--out", str(work / "reference")], check=True, stdout=subprocess.DEVNULL, env=env)
    rows = []
    for kb in (int(x) for x in args.free.split(",")):
        run, filler = args.tmpfs / "run", args.tmpfs / "filler"
        shutil.rmtree(run, ignore_errors=True)
        filler.unlink(missing_ok=True)
        total = shutil.disk_usage(args.tmpfs).free
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, total - kb * 1024))
        first = subprocess.run([*new, "--out", str(run)], capture_output=True, text=True, env=env)
        message = (first.stderr.strip().splitlines() or [""])[-1]
        found = checkpoints(run) if run.is_dir() else {}
        filler.unlink()
        argv = [*resume, "--resume", str(run)] if (run / ckpt.CONFIG).is_file() else [*new, "--out", str(run)]
        second = subprocess.run(argv, capture_output=True, text=True, env=env)
        exact = second.returncode == 0 and bit_exact(run / final, work / "reference" / final)
        row = {
            "free_kb": kb,
            "first_rc": first.returncode,
            "first_error": message if first.returncode else "",
            "traceback": "Traceback" in first.stderr,
            "checkpoints_after_full_disk": found,
            "corrupt": sum(v != "ok" for v in found.values()),
            "resume_rc": second.returncode,
            "bit_exact": exact,
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "checkpoints_after_full_disk"}), flush=True)
    shutil.rmtree(args.tmpfs / "run", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
