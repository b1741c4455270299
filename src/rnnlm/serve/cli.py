"""``rnnlm serve RUN_DIR [RUN_DIR ...]``: the local page over trained runs."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from rnnlm.core.errors import ConfigError

LOOPBACK = ("localhost",)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page over runs: generate, inspect, training curves, tag, frames",
        description="Serve a web page for the runs named: Generate and Inspect for language models, Tag for "
        "taggers, Frames for frame models, and Training curves for every run (live while it trains). Runs are "
        "loaded once; the page works offline. Needs the serve extra (pip install 'rnnlm[serve]').",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Run directories (any kind).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1, this machine only).")
    p.add_argument("--port", type=int, default=8000, help="Port (default: 8000).")
    p.set_defaults(handler=cmd_serve)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address."""
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(ns: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("rnnlm serve needs starlette and uvicorn: pip install 'rnnlm[serve]'") from None
    from rnnlm.serve.app import create_app

    if not is_loopback(ns.host):
        print(
            f"rnnlm: warning: serving on {ns.host}, which other machines may reach; the page has no login. "
            "Use --host 127.0.0.1 unless you mean it.",
            file=sys.stderr,
        )
    import torch

    # One thread per request: requests run side by side in the server's thread pool, and a batch-1 step is too
    # small for torch's own threads to pay (on a busy machine they make it many times slower).
    torch.set_num_threads(1)
    app = create_app(ns.run_dirs)
    for run in app.state.runs.values():
        print(f"{run.id}: {run.kind} run in {run.dir}" + (f" ({run.error})" if run.error else ""), file=sys.stderr)
    print(f"rnnlm serve: http://{ns.host}:{ns.port}/", file=sys.stderr)
    uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning")
    return 0
