"""Train word vectors on the shared English text, for a tagger's ``--word-vectors`` (no download needed).

    python bench/tagging_vectors.py --out runs/vectors.txt        # word2vec skip-gram, 100 dimensions
    python bench/tagging.py ner --set word_vectors=runs/vectors.txt

No pretrained vectors can be downloaded on our machines, so this trains them with gensim's word2vec
(``pip install gensim``; an optional tool, not a dependency of rnnlm) on every English text in the shared
data that no benchmark scores: the CoNLL-2003 and UD EWT training splits (their tokens only, no tags), the
Penn Treebank word files (train, valid and test: no tagger is scored on them), wikitext-2's valid and test
files, The Time Machine and tiny-shakespeare. Never a tagging task's dev or test split. Words are
normalized as the tagger looks them up (lowercased, digits as 0), and the corpora's own placeholders
(``<unk>``, PTB's ``N``) are dropped. Raw prose is split with the tagger's own tokenizer.

Writes the vectors in the word2vec text format (a ``count dim`` header, then ``word v1 ... vD`` per line)
atomically, and prints one JSON line: tokens, words kept, dimensions, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rnnlm.core.atomic import atomic_write_bytes
from rnnlm.tagging.encoding import normalize_word, read_tagged, tokenize

TAGGED = (("conll2003/eng.train", "ner"), ("ud_en_ewt/en_ewt-ud-train.conllu", "upos"))
TOKENIZED = (
    "ptb/ptb.train.txt",
    "ptb/ptb.valid.txt",
    "ptb/ptb.test.txt",
    "wikitext-2/wiki.valid.tokens",
    "wikitext-2/wiki.test.tokens",
)
PROSE = ("timemachine.txt", "tinyshakespeare.txt")
PLACEHOLDERS = {"<unk>", "n"}  # PTB writes every number as N (lowercased here)


def sentences(data: Path) -> list[list[str]]:
    """Every sentence (or line) of the corpora, as normalized words."""
    out: list[list[str]] = []

    def add(tokens: list[str]) -> None:
        words = [normalize_word(t, True, True) for t in tokens if t.lower() not in PLACEHOLDERS]
        if words:
            out.append(words)

    for name, column in TAGGED:
        for s in read_tagged(data / name, "auto", column):
            add(s.tokens)
    for name in TOKENIZED:
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("="):  # wikitext's headings
                add(line.split())
    for name in PROSE:
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            add([t for t, _, _ in tokenize(line)])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("RNNLM_DATA", "../shared/data"), help="the shared data folder")
    p.add_argument("--out", required=True, help="the vectors file to write (word2vec text format)")
    p.add_argument("--dim", type=int, default=100, help="dimensions (default: 100, the tagger's --word-dim)")
    p.add_argument("--min-count", type=int, default=2, help="drop words seen fewer times (default: 2)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the text (default: 10)")
    p.add_argument("--window", type=int, default=5, help="context words on each side (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="worker threads (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        from gensim.models import Word2Vec
    except ImportError:
        sys.exit("bench/tagging_vectors.py needs gensim: pip install gensim")
    start = time.perf_counter()
    text = sentences(Path(args.data))
    tokens = sum(len(s) for s in text)
    print(f"text: {len(text):,} sentences, {tokens:,} tokens", file=sys.stderr)
    model = Word2Vec(
        text,
        vector_size=args.dim,
        window=args.window,
        min_count=args.min_count,
        sg=1,
        negative=10,
        epochs=args.epochs,
        workers=args.threads,
        seed=args.seed,
    )
    kv = model.wv
    lines = [f"{len(kv.index_to_key)} {args.dim}"]
    lines += [w + " " + " ".join(f"{x:.5f}" for x in kv[w]) for w in kv.index_to_key]
    atomic_write_bytes(Path(args.out), ("\n".join(lines) + "\n").encode("utf-8"))
    result = {
        "sentences": len(text),
        "tokens": tokens,
        "words": len(kv.index_to_key),
        "dim": args.dim,
        "seconds": round(time.perf_counter() - start, 1),
        "out": args.out,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
