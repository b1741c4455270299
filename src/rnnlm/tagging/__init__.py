"""Sequence tagging: bidirectional recurrent taggers for part of speech and named entities.

>>> from rnnlm import tagging
>>> tagger = tagging.train("eng.train", dev="eng.testa", epochs=20, out="runs/ner")
>>> tagger = tagging.load("runs/ner")
"""

from rnnlm.tagging.api import SequenceTagger, load, train

__all__ = ["SequenceTagger", "load", "train"]
