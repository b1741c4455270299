"""``rnnlm tag`` end to end on tiny synthetic files: train, eval, predict (text and JSON), resume, errors."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from fixture_files import CONFIGS
from rnnlm.cli import build_parser, main
from rnnlm.core import checkpoint as ckpt
from rnnlm.core.errors import ConfigError, RnnlmError
from rnnlm.tagging import api as tagging
from rnnlm.tagging.config import SECTIONS, TagRunConfig, build_tag_config, split_settings
from rnnlm.tagging.encoding import encode
from rnnlm.tagging.task import TaggingTask
from tag_checks import run_cli
from tiny import TAGGER, TAGGER_FLAGS


@pytest.fixture(scope="module")
def ner_run(tiny_conll):
    d = tiny_conll(train=48, dev=12)
    log = run_cli("tag", "train", str(d / "train.txt"), "--dev", str(d / "dev.txt"), *TAGGER_FLAGS, "--epochs", "8",
                  "--out", str(d / "run"))  # fmt: skip
    return d, log


@pytest.mark.e2e
def test_train_writes_a_complete_run_and_learns(ner_run):
    d, log = ner_run
    run = d / "run"
    for name in (ckpt.CONFIG, ckpt.VOCAB, "chars.json", "tags.json", ckpt.METRICS, ckpt.LAST, ckpt.BEST):
        assert (run / name).is_file(), name
    config = json.loads((run / ckpt.CONFIG).read_text(encoding="utf-8"))
    assert config["format"] == "rnnlm-tag-run" and config["data"]["scheme"] == "IOB2"
    assert config["data"]["column"] == "ner" and "seq_len" not in config["train"]
    assert config["version"] == 3 and config["eval"] == {"eval_batch_size": 3}  # tiny.TAGGER's
    assert json.loads((run / "tags.json").read_text())["tags"][0] == "O"
    rows = ckpt.read_metrics(run)
    assert len(rows) == 8 and {"val_loss", "val_acc", "val_f1"} <= set(rows[-1])
    best = max(r["val_f1"] for r in rows)
    assert ckpt.load_weights(run / ckpt.BEST)[1]["val_f1"] == str(best)  # the best is chosen by dev F1
    assert best == 100.0
    assert "dev F1" in log and "scheme IOB2" in log


@pytest.mark.e2e
def test_eval_scores_the_best_checkpoint(ner_run):
    d, _ = ner_run
    result = json.loads(run_cli("tag", "eval", str(d / "run"), str(d / "dev.txt")))
    assert result["f1"] == 100.0 and result["accuracy"] == 100.0
    assert set(result["per_type"]) == {"LOC", "PER"} and result["sentences"] == 12
    assert result["checkpoint"].endswith("best.safetensors")


@pytest.mark.e2e
def test_predict_text_and_json(ner_run, tmp_path):
    d, _ = ner_run
    (tmp_path / "in.txt").write_text("Bob Smith visited New York.\n\nAnna likes Oslo .\n", encoding="utf-8")
    out = run_cli("tag", "predict", str(d / "run"), str(tmp_path / "in.txt"))
    sentences = [block.splitlines() for block in out.strip().split("\n\n")]
    assert sentences[0] == ["Bob\tB-PER", "Smith\tI-PER", "visited\tO", "New\tB-LOC", "York\tI-LOC", ".\tO"]
    assert len(sentences) == 2
    out = run_cli("tag", "predict", str(d / "run"), str(tmp_path / "in.txt"), "--json")
    first = json.loads(out.splitlines()[0])
    assert first["entities"] == [
        {"type": "PER", "start": 0, "end": 2, "text": "Bob Smith", "char_start": 0, "char_end": 9},
        {"type": "LOC", "start": 3, "end": 5, "text": "New York", "char_start": 18, "char_end": 26},
    ]
    (tmp_path / "tok.txt").write_text("Dan Brown Jr saw Rio .\n", encoding="utf-8")
    out = run_cli("tag", "predict", str(d / "run"), str(tmp_path / "tok.txt"), "--tokenized", "--json")
    assert json.loads(out)["entities"][0] == {"type": "PER", "start": 0, "end": 3, "text": "Dan Brown Jr"}


@pytest.mark.e2e
def test_tag_text_ends_lines_only_where_the_conll_readers_do(ner_run):
    """\\n, \\r\\n and \\r end a line; \\x0c, \\x85 and U+2028 (line ends to str.splitlines) do not, as in the
    CoNLL readers, where they only separate tokens."""
    d, _ = ner_run
    tagger = tagging.load(d / "run")
    text = "Anna visited Oslo\u2028Bob left Rio\n\nCarla saw\x0cParis\x85.\r\nDan left Oslo\rBob saw Rio"
    want = [["Anna", "visited", "Oslo", "Bob", "left", "Rio"], ["Carla", "saw", "Paris", "."]]
    want += [["Dan", "left", "Oslo"], ["Bob", "saw", "Rio"]]
    assert [s["tokens"] for s in tagger.tag_text(text, tokenized=True)] == want
    raw = tagger.tag_text(text)
    assert [s["tokens"] for s in raw] == want
    line = "Anna visited Oslo\u2028Bob left Rio"  # entity offsets count from the start of the whole line
    assert raw[0]["entities"] and all(line[e["char_start"] : e["char_end"]] == e["text"] for e in raw[0]["entities"])


@pytest.mark.e2e
def test_batched_tagging_equals_tagging_each_sentence_alone(ner_run):
    """Through the whole tagger (encoding, length sorting, padding, CRF, scheme conversion)."""
    d, _ = ner_run
    tagger = tagging.load(d / "run")
    rng = random.Random(5)
    words = ["Anna", "Rio", "visited", "New", "York", ".", "Zed", "Smith"]
    sents = [[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(30)]
    batched = tagger.tag(sents, batch_size=30)
    assert batched == [tagger.tag([s], batch_size=1)[0] for s in sents]
    assert [len(t) for t in batched] == [len(s) for s in sents]


@pytest.mark.e2e
def test_resume_continues_exactly(ner_run, tmp_path):
    d, _ = ner_run
    common = ["tag", "train", str(d / "train.txt"), "--dev", str(d / "dev.txt"), *TAGGER_FLAGS]
    run_cli(*common, "--epochs", "2", "--out", str(tmp_path / "straight"))
    run_cli(*common, "--epochs", "1", "--out", str(tmp_path / "resumed"))
    path = tmp_path / "resumed" / ckpt.CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))  # as version 1 wrote it: a run of an older rnnlm resumes
    config.update(version=1, data={**config["data"], **config.pop("eval")})
    path.write_text(json.dumps(config), encoding="utf-8")
    run_cli("tag", "train", "--resume", str(tmp_path / "resumed"), "--epochs", "2", "--eval-batch-size", "5")
    assert json.loads(path.read_text(encoding="utf-8"))["eval"] == {"eval_batch_size": 5}
    a = ckpt.load_weights(tmp_path / "straight" / ckpt.LAST)[0]
    b = ckpt.load_weights(tmp_path / "resumed" / ckpt.LAST)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
def test_pos_tagging_from_conllu_through_the_api(tmp_path):
    rows = {"the": "DET", "a": "DET", "dog": "NOUN", "cat": "NOUN", "runs": "VERB", "sleeps": "VERB"}
    blocks = []
    rng = random.Random(0)
    for k in range(40):
        words = [rng.choice(["the", "a"]), rng.choice(["dog", "cat"]), rng.choice(["runs", "sleeps"])]
        lines = [f"# sent_id = {k}"] + [
            f"{i}\t{w}\t_\t{rows[w]}\tX{rows[w]}\t_\t0\tdep\t_\t_" for i, w in enumerate(words, 1)
        ]
        blocks.append("\n".join(lines) + "\n")  # fmt: skip
    (tmp_path / "t.conllu").write_text("\n".join(blocks) + "\n", encoding="utf-8")
    tagger = tagging.train(tmp_path / "t.conllu", dev=str(tmp_path / "t.conllu"), head="softmax", epochs=6,
                           out=str(tmp_path / "pos"), progress=False, log=lambda _: None, **TAGGER)  # fmt: skip
    assert tagger.config.data.column == "upos" and tagger.config.data.scheme == "none"
    assert tagger.tag([["the", "cat", "sleeps"]]) == [["DET", "NOUN", "VERB"]]
    assert tagger.evaluate(tmp_path / "t.conllu")["accuracy"] == 100.0
    assert "entities" not in tagger.tag_text("a dog runs")[0]
    # another column of the same format holds other tags: a clear error, not an accuracy of 0
    with pytest.raises(ConfigError, match="--column xpos: the tagger predicts the upos column"):
        tagger.evaluate(tmp_path / "t.conllu", column="xpos")
    conll = tmp_path / "t.conll"  # the same sentences in CoNLL-2003 columns, with XPOS tags as pos
    conll.write_text("\n\n".join("\n".join(f"{w} X{rows[w]} O O" for w in ws) for ws in [["the", "dog", "runs"]]))
    with pytest.raises(ConfigError, match="none of its tags is one the tagger predicts"):
        tagger.evaluate(conll, format="conll2003", column="pos")
    conll.write_text("the DET O O\ndog NOUN O O\nruns VERB O O\n")  # another format, the same tags: scored
    assert tagger.evaluate(conll, format="conll2003", column="pos")["accuracy"] == 100.0


@pytest.mark.e2e
def test_an_auxiliary_column_trains_a_second_head_that_tagging_never_uses(tmp_path):
    upos = {"the": "DET", "a": "DET", "dog": "NOUN", "dogs": "NOUN", "runs": "VERB", "ran": "VERB"}
    xpos = {"the": "DT", "a": "DT", "dog": "NN", "dogs": "NNS", "runs": "VBZ", "ran": "VBD"}
    rng, blocks = random.Random(1), []
    for k in range(30):
        words = [rng.choice(["the", "a"]), rng.choice(["dog", "dogs"]), rng.choice(["runs", "ran"])]
        rows = [f"{i}\t{w}\t_\t{upos[w]}\t{xpos[w]}\t_\t0\tdep\t_\t_" for i, w in enumerate(words, 1)]
        blocks.append(f"# sent_id = {k}\n" + "\n".join(rows) + "\n")
    data = tmp_path / "t.conllu"
    data.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    settings = {**TAGGER, "epochs": 3, "progress": False, "log": lambda _: None}
    tagger = tagging.train(data, dev=str(data), aux_column="xpos", out=str(tmp_path / "pos"), **settings)
    assert json.loads((tmp_path / "pos" / "aux_tags.json").read_text())["tags"] == ["DT", "NN", "NNS", "VBD", "VBZ"]
    loaded = tagging.load(tmp_path / "pos")
    assert loaded.model.aux_head.out_features == 5 and loaded.encoder.aux.tags == tagger.encoder.aux.tags
    sentences = [["the", "dogs", "ran"], ["a", "dog", "runs"]]
    assert loaded.tag(sentences) == tagger.tag(sentences) and loaded.evaluate(data)["accuracy"] > 0
    # The task's loss is the head's plus --aux-weight times the second head's cross-entropy, computed here apart.
    task = TaggingTask(loaded.encoder, encode(loaded.encoder, sentences, [["DET", "NOUN", "VERB"]] * 2, 20,
                       aux_tags=[["DT", "NNS", "VBD"], ["DT", "NN", "VBZ"]]), None, None,
                       loaded.schemes, loaded.config.train, 8, torch.device("cpu"))  # fmt: skip
    batch = next(task.batches(0))
    assert batch.aux.tolist() == [[0, 2, 3], [0, 1, 4]] or batch.aux.tolist() == [[0, 1, 4], [0, 2, 3]]
    model = loaded.model.eval()
    scores, aux = model.forward_both(batch.words, batch.chars, batch.lengths)
    main_loss = model.loss(scores, batch.tags, batch.mask)
    ce = torch.nn.functional.cross_entropy(aux.reshape(-1, 5), batch.aux.reshape(-1), reduction="sum")
    for weight in (0.0, 0.5):
        task.tc.aux_weight = weight
        torch.testing.assert_close(task.loss(model, batch)[0], (main_loss + weight * ce) / 6)
    torch.testing.assert_close(model(batch.words, batch.chars, batch.lengths), scores)
    # Resuming reads the second column's tags back from the run; a column the file lacks is a clear error.
    tagging.train(resume=tmp_path / "pos", epochs=4, log=lambda _: None)
    with pytest.raises(RnnlmError, match="--aux-column 'ner' is not a conllu column"):
        tagging.train(data, aux_column="ner", out=str(tmp_path / "bad"), **settings)


def test_every_tagger_setting_has_a_flag_and_lm_only_ones_none(capsys):
    from rnnlm.lm.config import LMTrainConfig
    from rnnlm.training.config import TrainConfig

    with pytest.raises(SystemExit):
        build_parser().parse_args(["tag", "train", "--help"])
    out = capsys.readouterr().out
    for section, cls in SECTIONS.items():
        for name in (f.name for f in cls.__dataclass_fields__.values()):
            flag = "--" + name.replace("_", "-")
            if section == "data" and name == "train":
                assert "TRAIN" in out
            else:
                assert flag in out, flag
    lm_only = set(LMTrainConfig.__dataclass_fields__) - set(TrainConfig.__dataclass_fields__)
    assert len(lm_only) == 10
    for name in lm_only:  # a language model's settings: no flags, no fields
        assert f"--{name.replace('_', '-')} " not in out and name not in TagRunConfig().to_dict()["train"], name
    assert "--eval-batch-size" in out.split("eval options:")[1]


def test_a_version_1_tagger_config_reads_with_its_eval_batch_size():
    """A tagger's config.json before the eval section (version 1, as the fixture's code wrote it) reads with
    data.eval_batch_size in the eval section and model.impl as model.engine, and writes back as version 3 with
    nothing else changed."""
    old = json.loads((CONFIGS / "tag_v1.json").read_text(encoding="utf-8"))
    assert old["version"] == 1 and old["data"]["eval_batch_size"] == 100
    cfg = TagRunConfig.from_dict(old)
    assert cfg.eval.eval_batch_size == 100 and cfg == build_tag_config(
        split_settings({"train": "eng.train", "eval_batch_size": 100, "out": "runs/ner"})
    )
    new = cfg.to_dict()
    assert new["version"] == 3 and new["eval"] == {"eval_batch_size": 100} and "eval_batch_size" not in new["data"]
    assert new["model"] == {("engine" if k == "impl" else k): v for k, v in old["model"].items()}
    moved = {**old, "version": 3, "data": new["data"], "eval": new["eval"], "model": new["model"]}
    assert new == moved  # every other key and value as before
    with pytest.raises(ValueError, match="versions 1 to 3"):
        TagRunConfig.from_dict({**new, "version": 4})
    with pytest.raises(ValueError, match=r"section 'data' has unknown keys \['eval_batch_size'\]"):
        TagRunConfig.from_dict({**new, "data": old["data"]})  # version 3 has it in one place only


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args,message",
    [
        (["--column", "upos"], "--column 'upos' is not a conll2003 column"),
        (["--head", "hmm"], "invalid choice"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        # settings a tagger cannot honour are refused, not silently ignored
        (["--cuda-graph", "on"], "--cuda-graph on: a tagger's batches change shape"),
        (["--engine", "cpu"], "--engine cpu: a tagger's batches are padded"),
        (["--engine", "triton"], "a tagger runs auto, scratch, fused"),
        (["--engine", "scratch", "--matmul-dtype", "bfloat16"], "the scratch engine multiplies in float32 only"),
        (["--char-lm-context", "document"], "--char-lm-context document applies only with --char-lm"),
        (["--char-lm-layers", "all"], "--char-lm-layers all applies only with --char-lm"),
        (["--char-lm-pool", "document"], "--char-lm-pool document applies only with --char-lm"),
        (["--vector-words", "1000"], "--vector-words 1000 applies only with --word-vectors"),
        (["--aux-weight", "0.5"], "--aux-weight 0.5 applies only with --aux-column"),
    ],
)
def test_bad_settings_are_clear_errors(ner_run, tmp_path, capsys, args, message):
    d, _ = ner_run
    with contextlib.suppress(SystemExit):
        code = main(["tag", "train", str(d / "train.txt"), *args, "--out", str(tmp_path / "x")])
        assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "settings",
    [
        {"cuda_graph": "on"},
        {"engine": "cpu"},
        {"engine": "triton", "matmul_dtype": "bfloat16"},
        {"engine": "scratch", "matmul_dtype": "bfloat16"},
        {"char_lm_context": "document"},
        {"char_lm_layers": "all"},
        {"char_lm_pool": "document"},
        {"vector_words": 5},
        {"aux_weight": 0.0},
    ],
)
def test_settings_a_tagger_would_ignore_are_config_errors(settings):
    with pytest.raises(ConfigError, match="--" + next(iter(settings)).replace("_", "-")):
        build_tag_config(split_settings({**settings, "train": "x"})).check()


@pytest.mark.parametrize(
    "settings",
    [
        {"cuda_graph": "off"},
        {"engine": "scratch"},
        {"engine": "fused", "matmul_dtype": "bfloat16"},
        {"char_lm": "lms", "char_lm_context": "document", "char_lm_layers": "all", "char_lm_pool": "document"},
        {"word_vectors": "v.txt", "vector_words": 5},
        {"aux_column": "chunk", "aux_weight": 0.0},
    ],
)
def test_the_same_settings_with_what_they_apply_to_are_accepted(settings):
    cfg = build_tag_config(split_settings({**settings, "train": "x"}))
    cfg.check()
    flat = {k: v for section in cfg.to_dict().values() if isinstance(section, dict) for k, v in section.items()}
    assert all(flat[k] == v for k, v in settings.items())


def test_eval_of_a_language_model_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"format": "rnnlm-run", "version": 2}', encoding="utf-8")
    assert main(["tag", "eval", str(tmp_path), "x.txt"]) == 2
    assert "not a tagger run" in capsys.readouterr().err


def test_the_benchmark_settings_are_valid_tagger_settings():
    path = Path(__file__).resolve().parents[2] / "bench" / "tagging.py"
    spec = importlib.util.spec_from_file_location("bench_tagging", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for task, settings in bench.SETTINGS.items():
        cfg = build_tag_config(split_settings({**settings, "train": "x"}))
        cfg.check()
        assert cfg.data.column == settings["column"], task
        with_lm = {**settings, **bench.CHAR_LM_SETTINGS[task], "char_lm": "lms", "train": "x"}
        build_tag_config(split_settings(with_lm)).check()
    assert bench.CHAR_LM_SETTINGS["ner"] == {"char_lm_context": "document"}
    assert bench.SETTINGS["upos"]["aux_column"] == "xpos"


@pytest.mark.e2e
def test_ner_with_a_dev_set_needs_seqeval_before_anything_is_written(ner_run, tmp_path, capsys, monkeypatch):
    """Without the [tag] extra, entity F1 on --dev cannot be scored: the run must stop before it makes its
    directory (not after an epoch, with no checkpoint to resume and its --out refused)."""
    d, _ = ner_run
    for name in [m for m in sys.modules if m.startswith("seqeval.")] + ["seqeval"]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of seqeval now fails
    out = tmp_path / "ner"
    args = ["tag", "train", str(d / "train.txt"), "--dev", str(d / "dev.txt"), *TAGGER_FLAGS, "--out", str(out)]
    assert main(args) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "seqeval" in err and "pip install 'rnnlm[tag]'" in err and "--dev" in err
    # without a dev set nothing is scored by entities, so training needs no seqeval
    run_cli("tag", "train", str(d / "train.txt"), *TAGGER_FLAGS, "--epochs", "1", "--out", str(out))
    assert (out / ckpt.LAST).is_file()
