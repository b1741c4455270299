"""The web app: one page (static/) and a JSON API over the runs given at start.

Every run is named by its id (registry.py); no request names a file. Work on a model runs in Starlette's thread
pool, so one slow request never stalls the others; a generation streams its tokens as server-sent events.
Every refused request gets a 4xx with ``{"error": message}``; a fault of ours a 500 with the same shape.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import weakref
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rnnlm.core.errors import RnnlmError
from rnnlm.serve import frames as frames_view
from rnnlm.serve import lm_generate, lm_inspect
from rnnlm.serve import params as P
from rnnlm.serve import tag as tag_view
from rnnlm.serve.registry import ServedRun, open_runs, read_curves

FLUSH_S = 0.02  # a stream's tokens are written at most this often, in one event (the first token at once)
SAMPLE_TOKENS = 1_500  # tokens of validation text the Inspect page starts with
STATIC = Path(str(resources.files("rnnlm.serve") / "static"))


class _Streams:
    """How many generations stream now: past MAX_STREAMS a request gets 429 rather than a slow share."""

    def __init__(self) -> None:
        self.n, self.lock = 0, threading.Lock()

    def enter(self) -> None:
        with self.lock:
            if self.n >= P.MAX_STREAMS:
                raise P.BadRequest(f"{self.n} generations are streaming; try again when one ends", 429)
            self.n += 1

    def leave(self) -> None:
        with self.lock:
            self.n -= 1


def create_app(run_dirs: list[str | Path], runs: dict[str, ServedRun] | None = None) -> Starlette:
    """The app over these run directories (opened and loaded now), or over runs already opened."""
    served = runs if runs is not None else open_runs(run_dirs)
    streams = _Streams()

    def get_run(request: Request, *kinds: str) -> ServedRun:
        rid = request.path_params["rid"]
        run = served.get(rid)
        if run is None:
            raise P.BadRequest(f"no run {rid[:60]!r}; the runs are {', '.join(served)}", 404)
        if kinds and run.kind not in kinds:
            raise P.BadRequest(f"run {rid!r} is a {run.kind} run; this needs a {' or '.join(kinds)} run", 400)
        if kinds and run.model is None:
            raise P.BadRequest(f"run {rid!r}: {run.error}", 409)
        return run

    async def read_body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise P.BadRequest(f"the request body is {declared} bytes; at most {limit:,} are read", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise P.BadRequest(f"the request body is over {limit:,} bytes; send less", 413)
        return bytes(body)

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await read_body(request, P.MAX_BODY)
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise P.BadRequest(f"the body is not JSON ({e})") from None
        except RecursionError:
            raise P.BadRequest("the body nests too deeply; send a flat JSON object of settings") from None
        if not isinstance(body, dict):
            raise P.BadRequest("the body must be a JSON object of settings")
        return body

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def list_runs(request: Request) -> Response:
        return JSONResponse({"runs": [r.describe() for r in served.values()], "examples": tag_view.EXAMPLES})

    async def metrics(request: Request) -> Response:
        run = get_run(request)
        return JSONResponse({"id": run.id, "kind": run.kind, "sources": await run_in_threadpool(read_curves, run)})

    async def generate(request: Request) -> Response:
        run = get_run(request, "lm")
        s = lm_generate.settings(await json_body(request), len(run.model.vocab))
        events = await run_in_threadpool(lm_generate.start, run.model, s)  # a bad prefix fails here, as a 400
        streams.enter()

        def sse() -> Iterator[bytes]:
            """The events as server-sent events. The tokens ready within FLUSH_S of each other travel as one event,
            {"tokens": [...]}, in one write: each write is a hop through the thread pool and each event a JSON
            document for both ends to handle, so one per token would cost more than drawing the token."""
            out, tokens, last, first = [], [], 0.0, True

            def flush() -> None:
                if tokens:
                    out.append(b"data: " + json.dumps({"tokens": tokens}, ensure_ascii=False).encode() + b"\n\n")
                    tokens.clear()

            try:
                for event in events:
                    if "t" in event:
                        tokens.append(event)
                    else:
                        flush()
                        out.append(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")
                    now = time.perf_counter()
                    if now - last >= FLUSH_S or (first and tokens):  # the first token goes at once
                        flush()
                        yield b"".join(out)
                        out, last, first = [], now, False
            except (RnnlmError, ValueError) as e:  # after the first byte: the stream says so and ends
                flush()
                out.append(b"data: " + json.dumps({"error": str(e)}).encode() + b"\n\n")
            flush()
            yield b"".join(out) + b'data: {"done": true}\n\n'

        body = sse()
        # The stream counts as running until its generator is gone: finished, abandoned by a client that left, or
        # never started (a finally inside it would not run then).
        weakref.finalize(body, streams.leave)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    def _inspect(run: ServedRun, body: dict[str, Any]) -> dict[str, Any]:
        lm = run.model
        text = P.text(body, "text", P.MAX_INSPECT)
        cell, layers = lm.config.model.cell, lm.config.model.layers
        what = P.choice(body, "signal", lm_inspect.SIGNALS[cell], "h")
        layer = P.number(body, "layer", layers - 1, 0, layers - 1, integer=True)
        ids = lm.encode_text(text)
        if len(ids) < 2:
            raise P.BadRequest("give a text of at least 2 tokens")
        # the states of the last text are kept: a span or another signal of the same text needs no new pass
        kept = lm_inspect.text_states(lm, run.cache, ids, () if what == "h" else (layer,))
        m = kept.signal(f"{what}{layer}")
        tokens = lm_inspect.token_texts(lm, ids)
        if body.get("span_only") is True:  # the page has the heat map already: the span's units and places alone
            return {"span": _span(run, body, m, tokens, what, layer)}
        values, scale = lm_inspect.quantize(m)
        out = {
            "tokens": tokens,
            "loss": lm_inspect.losses(kept.logits, ids),
            "signals": list(lm_inspect.SIGNALS[cell]),
            "signal": what,
            "layer": layer,
            "layers": layers,
            "steps": int(m.shape[0]),
            "units": int(m.shape[1]),
            "scale": scale,
            "values": base64.b64encode(values).decode(),
            "orders": lm_inspect.unit_orders(m),
            "ranking": lm_inspect.rank_units(m, tokens) if lm.vocab.level == "char" else {},
        }
        if "start" in body or "end" in body:
            out["span"] = _span(run, body, m, tokens, what, layer)
        return out

    def _span(run: ServedRun, body: dict[str, Any], m: Any, tokens: list[str], what: str, layer: int) -> dict:
        start = P.number(body, "start", 0, 0, len(tokens) - 1, integer=True)
        end = P.number(body, "end", start + 1, start + 1, len(tokens), integer=True)
        units = lm_inspect.span_units(m, start, end)
        val = lm_inspect.validation_states(run.model, run.cache, f"{what}{layer}")
        out: dict[str, Any] = {"start": start, "end": end, "units": units}
        if val is None:
            out["places"], out["note"] = [], "the run's validation text is not available here"
        else:
            out["places"] = lm_inspect.top_places(val[0], val[1], [u for u, _, _ in units[:5]], end - start)
        return out

    async def inspect(request: Request) -> Response:
        run = get_run(request, "lm")
        body = await json_body(request)
        return JSONResponse(await run_in_threadpool(_inspect, run, body))

    async def sample(request: Request) -> Response:
        run = get_run(request, "lm")
        val = await run_in_threadpool(lm_inspect.validation_tokens, run.model, run.cache)
        return JSONResponse({"text": "".join(val[0][:SAMPLE_TOKENS]) if val else ""})

    async def tag(request: Request) -> Response:
        run = get_run(request, "tagger")
        body = await json_body(request)
        line = P.text(body, "text", P.MAX_TAG_CHARS).replace("\r", " ").replace("\n", " ")
        if not line.strip():
            raise P.BadRequest("give a sentence to tag")
        item = await run_in_threadpool(tag_view.tag_line, run.model, line)
        return JSONResponse({**item, "transitions": tag_view.transitions(run.model)})

    async def frames(request: Request) -> Response:
        run = get_run(request, "frames")
        name = request.query_params.get("name", "upload.ts")[:200]
        index = request.query_params.get("saliency")
        data = await read_body(request, P.MAX_UPLOAD)
        if not data:
            raise P.BadRequest("the body is empty; upload a .ts or .npz file as the body")
        if index is None:
            return JSONResponse(await run_in_threadpool(frames_view.predict_upload, run.model, data, name))
        if not index.isdigit():
            raise P.BadRequest(f"saliency must be a sequence number, not {index[:40]!r}")
        return JSONResponse(await run_in_threadpool(frames_view.saliency, run.model, data, name, int(index)))

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, P.BadRequest):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        if isinstance(exc, HTTPException):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        return JSONResponse({"error": str(exc)}, status_code=400)  # the user's input: RnnlmError, ValueError

    async def fault(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server keeps running"}, 500)

    routes = [
        Route("/", index),
        Route("/api/runs", list_runs),
        Route("/api/runs/{rid}/metrics", metrics),
        Route("/api/runs/{rid}/generate", generate, methods=["POST"]),
        Route("/api/runs/{rid}/inspect", inspect, methods=["POST"]),
        Route("/api/runs/{rid}/sample", sample),
        Route("/api/runs/{rid}/tag", tag, methods=["POST"]),
        Route("/api/runs/{rid}/frames", frames, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {HTTPException: refused, RnnlmError: refused, ValueError: refused, Exception: fault}
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.runs = served
    return app
