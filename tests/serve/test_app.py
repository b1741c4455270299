"""The API through Starlette's test client: each page's request, and requests that must be refused with a 4xx
JSON error (bad settings, caps, unknown runs, path tricks) without harming the server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlm.serve import params as P

pytestmark = pytest.mark.e2e  # the runs are trained once per session (conftest.served_runs)


def events(response) -> list[dict]:
    """The stream's events, with each {"tokens": [...]} event opened into its tokens."""
    out = []
    for line in response.text.split("\n\n"):
        if line.startswith("data: "):
            event = json.loads(line[6:])
            out.extend(event.get("tokens", [event]))
    return out


def test_runs_are_listed_by_id_and_never_by_path(client, served_runs):
    runs = client.get("/api/runs").json()["runs"]
    assert [(r["id"], r["kind"], r["ready"]) for r in runs] == [
        ("lm", "lm", True),
        ("tag", "tagger", True),
        ("fr", "frames", True),
    ]
    assert str(served_runs["lm"].parent) not in json.dumps(runs)


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_metrics_are_the_runs_rows(client, served_runs):
    sources = client.get("/api/runs/lm/metrics").json()["sources"]
    lines = (served_runs["lm"] / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in sources[0]["rows"]] == [json.loads(line)["step"] for line in lines]


def test_generation_streams_the_seeded_sample_of_the_api(client, app):
    """The streamed text is the sample LanguageModel.generate draws with the same seed (filtered sampling, which
    both run through sample_next on the torch path)."""
    settings = {"prefix": "row 1", "length": 40, "temperature": 0.9, "top_k": 5, "seed": 7}
    got = events(client.post("/api/runs/lm/generate", json=settings))
    assert got[0] == {"prefix": "row 1"} and got[-1] == {"done": True}
    tokens = got[1:-1]
    assert len(tokens) == 40
    lm = app.state.runs["lm"].model
    want = lm.generate("row 1", length=40, temperature=0.9, top_k=5, seed=7)
    assert "row 1" + "".join(t["t"] for t in tokens) == want
    for t in tokens:  # each token's probability is the one listed among its alternatives
        alts = dict(t["alts"])
        assert len(t["alts"]) == 5 and (t["t"] not in alts or alts[t["t"]] == t["p"])


def test_plain_sampling_streams_rnnlm_generates_text_with_the_models_probabilities(client, app):
    """Plain temperature sampling runs the compiled kernel in chunks: the text is what LanguageModel.generate
    draws with the seed, and each token's probability is the model's own, from one forward pass over the text."""
    settings = {"prefix": "row 1", "length": 50, "temperature": 0.8, "seed": 3, "alternatives": 3}
    tokens = events(client.post("/api/runs/lm/generate", json=settings))[1:-1]
    lm = app.state.runs["lm"].model
    text = "".join(t["t"] for t in tokens)
    assert "row 1" + text == lm.generate("row 1", length=50, temperature=0.8, seed=3)
    ids = lm.encode_prefix("row 1" + text)
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([ids]))
    probs = torch.softmax(logits[0, 4:-1].double(), -1)  # the rows that predicted each generated token
    want = probs[torch.arange(50), torch.tensor(ids[5:])]
    # the run multiplies in bfloat16 where the CPU has it, and a chunk's pass rounds apart from the whole text's:
    # agreement to bfloat16's rounding, far closer than a row off by one token would come
    np.testing.assert_allclose([t["p"] for t in tokens], want.numpy(), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose([t["alts"][0][1] for t in tokens], probs.max(-1).values, rtol=1e-2, atol=1e-3)


def test_beam_streams_the_api_beam(client, app):
    got = events(client.post("/api/runs/lm/generate", json={"prefix": "row", "length": 12, "beam": 3}))
    lm = app.state.runs["lm"].model
    assert "row" + "".join(t["t"] for t in got[1:-1]) == lm.generate("row", length=12, beam=3)


def test_inspect_returns_states_losses_and_a_span(client):
    text = "row 7: pack my box 42\n"
    r = client.post("/api/runs/lm/inspect", json={"text": text, "signal": "c", "start": 8, "end": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "".join(body["tokens"]) == text and body["steps"] == len(text) and body["units"] == 16
    assert body["loss"][0] is None and all(v > 0 for v in body["loss"][1:])
    assert sorted(body["orders"]["cluster"]) == list(range(16))
    assert set(body["ranking"]) == {"in quotes", "in brackets", "position in line", "digit", "upper case"}
    assert body["ranking"]["in quotes"] == []  # no quote in the text: nothing to follow
    assert len(body["ranking"]["digit"]) == 8
    assert len(body["span"]["units"]) == 10 and len(body["span"]["places"]) == 5
    assert all(len(p["span"]) == 4 for p in body["span"]["places"])
    alone = client.post(
        "/api/runs/lm/inspect", json={"text": text, "signal": "c", "start": 8, "end": 12, "span_only": True}
    )
    assert alone.json() == {"span": body["span"]}  # the page's span request: the same span, without the heat map


def test_sample_is_the_validation_text(client, served_runs):
    text = client.get("/api/runs/lm/sample").json()["text"]
    assert text and (served_runs["lm"].parent / "corpus.txt").read_text().endswith(text)


def test_tag_returns_tags_marginals_and_transitions(client, app):
    body = client.post("/api/runs/tag/tag", json={"text": "Apple is a great company"}).json()
    tagger = app.state.runs["tag"].model
    assert body["tags"] == tagger.tag_text("Apple is a great company")[0]["tags"]
    assert np.allclose(np.sum(body["marginals"], axis=1), 1, atol=1e-3)
    k = len(body["tag_names"])
    assert np.shape(body["transitions"]["matrix"]) == (k, k)


def test_frames_upload_predicts_like_the_api(client, app, served_runs):
    data = served_runs["ts"].read_bytes()
    body = client.post("/api/runs/fr/frames?name=test.ts", content=data).json()
    fm = app.state.runs["fr"].model
    assert body["predictions"] == fm.predict_proba(served_runs["ts"]).argmax(-1).tolist()
    report = fm.evaluate(served_runs["ts"])
    assert body["report"]["confusion"] == report["confusion"]
    sal = client.post("/api/runs/fr/frames?name=test.ts&saliency=1", content=data).json()
    assert len(sal["saliency"]) == body["lengths"][1]


def test_an_npz_upload_without_labels_is_predicted(client, app):
    x = np.random.default_rng(0).standard_normal((3, 6, 2)).astype(np.float32)
    import io

    buf = io.BytesIO()
    np.savez(buf, x=x, lengths=np.array([6, 4, 5]))
    body = client.post("/api/runs/fr/frames?name=u.npz", content=buf.getvalue()).json()
    assert len(body["predictions"]) == 3 and "report" not in body


# -- refused requests ---------------------------------------------------------------------------------------

BAD = [
    ("post", "/api/runs/lm/generate", {"length": -1}, 400),
    ("post", "/api/runs/lm/generate", {"length": P.MAX_LENGTH + 1}, 400),
    ("post", "/api/runs/lm/generate", {"length": 2.5}, 400),
    ("post", "/api/runs/lm/generate", {"temperature": "hot"}, 400),
    ("post", "/api/runs/lm/generate", {"temperature": float("nan")}, 400),
    ("post", "/api/runs/lm/generate", {"top_p": 0}, 400),
    ("post", "/api/runs/lm/generate", {"top_k": True}, 400),
    ("post", "/api/runs/lm/generate", {"beam": P.MAX_BEAM + 1}, 400),
    ("post", "/api/runs/lm/generate", {"prefix": ["a"]}, 400),
    ("post", "/api/runs/lm/generate", {"prefix": "\u2603 snowman"}, 400),  # outside the vocabulary
    ("post", "/api/runs/lm/generate", {"prefix": "x" * (P.MAX_PREFIX + 1)}, 413),
    ("post", "/api/runs/lm/inspect", {"text": "x" * (P.MAX_INSPECT + 1)}, 413),
    ("post", "/api/runs/lm/inspect", {"text": "r"}, 400),
    ("post", "/api/runs/lm/inspect", {"text": "row 1", "signal": "q"}, 400),
    ("post", "/api/runs/lm/inspect", {"text": "row 1", "layer": 1}, 400),
    ("post", "/api/runs/lm/inspect", {"text": "row 1", "start": 3, "end": 2}, 400),
    ("post", "/api/runs/lm/inspect", {"text": "row 1", "start": 9}, 400),
    ("post", "/api/runs/tag/tag", {"text": "   "}, 400),
    ("post", "/api/runs/tag/tag", {}, 400),
    ("post", "/api/runs/tag/generate", {}, 400),  # a tagger cannot generate
    ("post", "/api/runs/fr/tag", {"text": "a"}, 400),
    ("get", "/api/runs/lm/generate", None, 405),
    ("get", "/api/runs/nope/metrics", None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_json_error(client, method, path, body, status):
    kwargs = {"content": json.dumps(body, allow_nan=True)} if body is not None else {}
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_streams_past_the_cap_get_429_and_finished_ones_free_their_place(client, app, monkeypatch):
    import gc

    monkeypatch.setattr(P, "MAX_STREAMS", 1)
    with client.stream("POST", "/api/runs/lm/generate", json={"prefix": "row", "length": 2000}) as first:
        assert first.status_code == 200
        second = client.post("/api/runs/lm/generate", json={"prefix": "row", "length": 5})
        assert second.status_code == 429 and "streaming" in second.json()["error"]
    gc.collect()
    assert client.post("/api/runs/lm/generate", json={"prefix": "row", "length": 5}).status_code == 200


def test_bodies_that_are_not_settings_are_refused(client):
    assert client.post("/api/runs/lm/generate", content=b"{not json").status_code == 400
    assert client.post("/api/runs/lm/generate", content=b"[1, 2]").status_code == 400
    assert client.post("/api/runs/lm/generate", content=b"\xff\xfe").status_code == 400
    assert client.post("/api/runs/lm/generate", content=b"[" * 100_000).status_code == 400
    big = b'{"prefix": "' + b"a" * P.MAX_BODY + b'"}'
    assert client.post("/api/runs/lm/generate", content=big).status_code == 413


def test_bad_uploads_are_refused(client):
    assert client.post("/api/runs/fr/frames?name=x.ts", content=b"").status_code == 400
    assert client.post("/api/runs/fr/frames?name=x.csv", content=b"1,2").status_code == 400
    assert client.post("/api/runs/fr/frames?name=x.npz", content=b"not a zip").status_code == 400
    assert client.post("/api/runs/fr/frames?name=x.ts", content=b"@data\n1,2:up\n").status_code == 400
    assert client.post("/api/runs/fr/frames?name=x.ts", content=b"\xff\xfe@data").status_code == 400
    r = client.post("/api/runs/fr/frames?name=x.ts", content=b"x" * (P.MAX_UPLOAD + 1))
    assert r.status_code == 413
    ts = b"@classLabel false\n@data\n1,2,3:4,5,6\n"
    assert client.post("/api/runs/fr/frames?name=x.ts&saliency=5", content=ts).status_code == 400
    assert client.post("/api/runs/fr/frames?name=x.ts&saliency=-1", content=ts).status_code == 400


TRICKS = [
    "/api/runs/../lm/metrics",
    "/api/runs/..%2F..%2Fetc%2Fpasswd/metrics",
    "/api/runs/%2Fetc%2Fpasswd/metrics",
    "/api/runs/%2e%2e/metrics",
    "/api/runs/..%5C..%5Cconfig.json/metrics",
    "/api/runs/lm%2F..%2F..%2Ftag/metrics",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2Fapp.py",
    "/static/%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("path", TRICKS)
def test_path_tricks_reach_nothing(client, path, served_runs):
    """Neither a run id nor a static asset can name a file outside what the server was given."""
    r = client.get(path)
    if r.status_code == 200:  # only the plain ".." collapses (client side) onto the real run "lm"
        assert path == "/api/runs/../lm/metrics" and r.json()["id"] == "lm"
        return
    assert r.status_code == 404, r.text
    assert "error" in r.json()
    assert "import" not in r.text and "root:" not in r.text


def test_serving_beyond_loopback_warns(served_runs, monkeypatch, capsys):
    import uvicorn

    from rnnlm.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((host, port)))
    assert main(["serve", str(served_runs["lm"]), "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert calls == [("0.0.0.0", 8123)]
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", str(served_runs["lm"])]) == 0
    assert calls[-1] == ("127.0.0.1", 8000) and "warning" not in capsys.readouterr().err
