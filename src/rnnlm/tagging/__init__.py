"""Sequence tagging: bidirectional recurrent taggers for part of speech and named entities.

>>> from rnnlm import tagging
>>> tagger = tagging.train("eng.train", dev="eng.testa", epochs=20, out="runs/ner")
>>> tagger = tagging.load("runs/ner")
>>> tagger = tagging.train("eng.train", dev="eng.testa", preset="ner", out="runs/ner-best")  # the whole protocol
>>> tagging.train_char_lms(["eng.train", "more_text.txt"], "runs/charlm", time_budget=600)  # for char_lm=
"""

from rnnlm.tagging.api import SequenceTagger, load, train
from rnnlm.tagging.char_lms import train_char_lms
from rnnlm.tagging.recipe import PRESETS, Preset

__all__ = ["PRESETS", "Preset", "SequenceTagger", "load", "train", "train_char_lms"]
