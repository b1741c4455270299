"""Text in, token ids out: reading files, named corpora, the vocabulary and minibatch sampling."""

from rnnlm.data.batching import BatchSampler, EpochPlan
from rnnlm.data.corpora import CorpusSpec, corpus_files, corpus_text, list_corpora
from rnnlm.data.dataset import Corpus, load_corpus, load_texts
from rnnlm.data.text import read_text, read_texts, resolve_paths
from rnnlm.data.vocab import Vocab

__all__ = [
    "BatchSampler",
    "Corpus",
    "CorpusSpec",
    "EpochPlan",
    "Vocab",
    "corpus_files",
    "corpus_text",
    "list_corpora",
    "load_corpus",
    "load_texts",
    "read_text",
    "read_texts",
    "resolve_paths",
]
