"""Load test of `rnnlm serve` on loopback: first-token latency, streaming rate, concurrent clients, bad requests,
and the Inspect page on 5,000 characters.

    python bench/serve_load.py                      # a 2 x 448 LSTM, the issue's targets
    python bench/serve_load.py --quick              # a tiny model and few requests (tests/bench runs this)
    python bench/serve_load.py --speed --before ../main   # only the side-by-side ratios, this tree's server and then
                                                          # another checkout's (before/after a change), ~3 minutes

The model is a run trained for one step (its weights do not matter for speed) on a text of every printable ASCII
character; the server is `rnnlm serve` in a subprocess, so the numbers include HTTP, JSON and the event stream.
Writes the figures as JSON (--out) and prints them. Inspect is timed twice: the API call, and, where Debian's
chromium and playwright are installed, the page from the click to the drawn heat map.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import machine  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
# One client for every request: making an httpx.Client costs about 200 ms (its TLS context), which would otherwise
# land in every latency measured here.
CLIENT = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))


def make_run(folder: Path, layers: int, hidden: int) -> Path:
    import rnnlm

    rng = random.Random(0)
    alphabet = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    text = "".join(rng.choice(alphabet) for _ in range(20_000))
    (folder / "text.txt").write_text(text, encoding="utf-8")
    rnnlm.train(
        str(folder / "text.txt"), cell="lstm", layers=layers, hidden=hidden, embed=64, batch_size=4, seq_len=32,
        max_steps=1, epochs=1, pred_period=0, progress=False, out=str(folder / "run"), log=lambda s: None,
    )  # fmt: skip
    return folder / "run"


def start_server(run: Path, threads: int | None, tree: Path = ROOT) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "rnnlm.cli", "serve", str(run), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/api/runs", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start: " + proc.stderr.read().decode()[-2000:])


def stream(url: str, body: dict) -> dict:
    """One generation: status, seconds to the first token, chars and seconds after it, errors in the stream."""
    t0 = time.perf_counter()
    first, chars, errors = None, 0, []
    with CLIENT.stream("POST", url + "/api/runs/run/generate", json=body) as r:
        if r.status_code != 200:
            r.read()
            return {"status": r.status_code, "error": r.text}
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            tokens = ev.get("tokens") or ([ev] if "t" in ev else [])  # the tokens since the last event (or one)
            if tokens:
                if first is None:
                    first = time.perf_counter()
                chars += sum(len(t["t"]) for t in tokens)
            if "error" in ev:
                errors.append(ev["error"])
    end = time.perf_counter()
    rate = chars / (end - first) if first and end > first else 0.0
    return {"status": 200, "first_s": (first or end) - t0, "chars": chars, "rate": rate, "errors": errors}


def first_token(url: str, n: int, prefix: str) -> dict:
    runs = [stream(url, {"prefix": prefix, "length": 20, "temperature": 0.8}) for _ in range(n)]
    if any(r["status"] != 200 for r in runs):
        raise SystemExit(f"a generation failed: {runs}")
    times = [r["first_s"] for r in runs]
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times), "n": n}


def concurrent(url: str, clients: int, length: int) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: stream(url, {"prefix": "The ", "length": length, "seed": i}), range(clients)))
    statuses = [r["status"] for r in results]
    rates = [r["rate"] for r in results if r["status"] == 200]
    return {
        "clients": clients,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "stream_errors": sum(len(r.get("errors", [])) for r in results),
        "rate_min": min(rates) if rates else 0.0,
        "rate_median": statistics.median(rates) if rates else 0.0,
        "total_chars_per_s": sum(rates),
    }


BAD = [
    {"length": -5}, {"length": 10**9}, {"temperature": "hot"}, {"temperature": -1}, {"top_p": 0}, {"top_k": -2},
    {"beam": 99}, {"prefix": 12}, {"prefix": "x" * 5000}, {"seed": "s"}, {"length": 1.5}, {"top_k": True},
]  # fmt: skip


def mixed(url: str, total: int, workers: int = 8) -> dict:
    """``total`` requests, a fifth good ones (short generations), the rest bad settings, bad JSON, bad ids and bad
    uploads, from ``workers`` threads at once; each bad one must be a 4xx and each good one a 200."""
    rng = random.Random(0)
    jobs = []
    for i in range(total):
        kind = "good" if i % 5 == 0 else rng.choice(["settings", "json", "id", "inspect", "upload"])
        jobs.append(kind)

    def one(kind: str) -> tuple[str, int]:
        c = CLIENT  # shared: safe across threads
        if kind == "good":
            r = c.post(url + "/api/runs/run/generate", json={"prefix": "a", "length": 10})
        elif kind == "settings":
            r = c.post(url + "/api/runs/run/generate", json=rng.choice(BAD))
        elif kind == "json":
            r = c.post(url + "/api/runs/run/generate", content=b"{oops")
        elif kind == "id":
            r = c.get(url + "/api/runs/" + rng.choice(["..%2F..", "%2Fetc", "nope", "run%00"]) + "/metrics")
        elif kind == "inspect":
            r = c.post(url + "/api/runs/run/inspect", json={"text": "a", "signal": "zz"})
        else:
            r = c.post(url + "/api/runs/run/frames?name=x.ts", content=b"@data")
        return kind, r.status_code

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, jobs))
    good = [s for k, s in results if k == "good"]
    bad = [s for k, s in results if k != "good"]
    alive = CLIENT.get(url + "/api/runs").status_code == 200
    return {
        "requests": total,
        "good_200": sum(s == 200 for s in good),
        "good": len(good),
        "bad_4xx": sum(400 <= s < 500 for s in bad),
        "bad": len(bad),
        "bad_5xx": sum(s >= 500 for s in bad),
        "server_up_after": alive,
    }


def inspect(url: str, chars: int) -> dict:
    rng = random.Random(1)
    text = "".join(rng.choice(string.ascii_letters + ' .,\n"()0123456789') for _ in range(chars))
    t0 = time.perf_counter()
    r = CLIENT.post(url + "/api/runs/run/inspect", json={"text": text, "signal": "c"})
    out = {"chars": chars, "status": r.status_code, "api_s": time.perf_counter() - t0, "bytes": len(r.content)}
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if not chromium:
        out["page_s"] = None
        return out
    with sync_playwright() as p:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page()
        page.goto(url + "/#inspect")
        page.fill("#ins-text", text[::-1])  # another text: the server keeps the states of the last one
        page.select_option("#ins-signal", "c")
        t0 = time.perf_counter()
        page.click("#ins-go")
        page.wait_for_selector("body[data-inspected]", timeout=60_000)
        page.evaluate("new Promise(requestAnimationFrame)")  # the heat map and text painted
        out["page_s"] = time.perf_counter() - t0
        browser.close()
    return out


def side_by_side(url: str, run: Path, length: int, rounds: int) -> dict:
    """The served stream against generation in this process, alternating, so that both see the same load: the
    page's generator without HTTP (lm_generate, probabilities and alternatives included) and ``LanguageModel.stream``
    (what ``rnnlm generate`` runs: the compiled kernel, no probabilities). Medians of ``rounds``, chars/s."""
    import torch

    from rnnlm.lm.api import load
    from rnnlm.serve import lm_generate

    torch.set_num_threads(1)  # as the server runs each request
    lm = load(run)
    settings = lm_generate.settings({"prefix": "The ", "length": length, "temperature": 0.8}, len(lm.vocab))
    served, page, cli, first_page = [], [], [], []
    for _ in range(rounds):
        served.append(stream(url, {"prefix": "The ", "length": length, "temperature": 0.8})["rate"])
        t0 = time.perf_counter()
        events = lm_generate.start(lm, settings)
        next(events), next(events)
        t1 = time.perf_counter()
        n = 1 + sum(len(e.get("t", "")) for e in events)
        page.append(n / (time.perf_counter() - t1))
        first_page.append(t1 - t0)
        t0 = time.perf_counter()
        n = sum(len(piece) for piece in lm.stream("The ", length, temperature=0.8)) - 4
        cli.append(n / (time.perf_counter() - t0))
    med = statistics.median
    return {
        "served_chars_per_s": med(served),
        "in_process_page_generator_chars_per_s": med(page),
        "in_process_first_token_ms": 1000 * med(first_page),
        "rnnlm_generate_chars_per_s": med(cli),
        "served_over_generate": med(served) / med(cli),
        "served_over_in_process": med(served) / med(page),
    }


def inspect_side_by_side(url: str, run: Path, chars: int, rounds: int) -> dict:
    """Inspect through the server against one forward pass of the model over the same text in this process (what
    scoring the text costs, by the run's own engine), alternating, so that both see the same load. Each round
    inspects a new text (the server keeps the last text's states), then selects a span of it, then another signal
    of it, which reuse them. Medians of ``rounds``, seconds."""
    import numpy as np
    import torch

    from rnnlm.lm.api import load

    torch.set_num_threads(1)  # as the server runs each request
    lm = load(run)
    first, span, other, forward = [], [], [], []
    for k in range(rounds):
        rng = random.Random(100 + k)
        text = "".join(rng.choice(string.ascii_letters + ' .,\n"()0123456789') for _ in range(chars))
        for times, extra in [
            (first, {}),
            (span, {"start": 10, "end": 20, "span_only": True}),
            (other, {"signal": "f"}),
        ]:
            t0 = time.perf_counter()
            r = CLIENT.post(url + "/api/runs/run/inspect", json={"text": text, "signal": "c", **extra})
            times.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"inspect failed: {r.text[:500]}")
        X = torch.as_tensor(lm.encode_text(text).astype(np.int64))[None]
        t0 = time.perf_counter()
        with torch.no_grad():
            lm.model(X)
        forward.append(time.perf_counter() - t0)
    med = statistics.median
    return {
        "chars": chars,
        "inspect_api_s": med(first),
        "span_of_the_same_text_s": med(span),
        "other_signal_of_the_same_text_s": med(other),
        "model_forward_in_process_s": med(forward),
        "inspect_over_forward": med(first) / med(forward),
    }


def speed(run: Path, model: str, chars: int, trees: dict[str, Path]) -> dict:
    """The side-by-side figures alone (streaming against ``rnnlm generate``, Inspect against the model's forward
    pass, and the page), for the server of each checkout in turn: ratios that survive a loaded machine."""
    res: dict = {"model": model, "machine": machine.kind(machine.describe()), "load_before": os.getloadavg()}
    for name, tree in trees.items():
        proc, url = start_server(run, None, tree.resolve())
        try:
            stream(url, {"prefix": "warm", "length": 50})
            res[name] = {
                "tree": str(tree),
                "load": os.getloadavg(),
                "side_by_side": side_by_side(url, run, 2000, 3),
                "inspect_side_by_side": inspect_side_by_side(url, run, chars, 2),
                "inspect_page": inspect(url, chars),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    res["load_after"] = os.getloadavg()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=448)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--inspect-chars", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the server (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="a tiny model and few requests, to check the script runs")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    ap.add_argument("--speed", action="store_true", help="only the side-by-side streaming and Inspect ratios")
    ap.add_argument("--before", type=Path, default=None, help="with --speed: also measure this checkout's server")
    a = ap.parse_args()
    if a.quick:
        a.layers, a.hidden, a.clients, a.requests, a.inspect_chars = 1, 16, 3, 20, 200
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), a.layers, a.hidden)
        if a.speed:
            res = speed(
                run,
                f"lstm {a.layers}x{a.hidden}",
                a.inspect_chars,
                {"before": a.before, "after": ROOT} if a.before else {"this tree": ROOT},
            )
            print(json.dumps(res, indent=2))
            if a.out:
                a.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
            return
        proc, url = start_server(run, a.threads)
        try:
            stream(url, {"prefix": "warm", "length": 50})  # the first request builds the step decoder
            res = {
                "model": f"lstm {a.layers}x{a.hidden}",
                "machine": machine.kind(machine.describe()),
                "load_before": os.getloadavg(),
            }
            res["first_token"] = first_token(url, 5 if a.quick else 30, "The ")
            res["first_token_prefix_500"] = first_token(url, 3 if a.quick else 10, "ab " * 167)
            one = stream(url, {"prefix": "The ", "length": 200 if a.quick else 2000, "temperature": 0.8})
            res["one_client"] = {"chars": one["chars"], "chars_per_s": one["rate"]}
            res["side_by_side"] = side_by_side(url, run, 200 if a.quick else 2000, 2 if a.quick else 5)
            res["concurrent"] = concurrent(url, a.clients, 100 if a.quick else 500)
            res["mixed"] = mixed(url, a.requests)
            res["inspect"] = inspect(url, a.inspect_chars)
            res["inspect_side_by_side"] = inspect_side_by_side(url, run, a.inspect_chars, 2 if a.quick else 3)
            res["server_exit_code"] = proc.poll()  # None: still running
            res["load_after"] = os.getloadavg()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
