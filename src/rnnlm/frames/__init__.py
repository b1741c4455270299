"""Frame sequences: recurrent models over real-valued feature vectors (e.g. speech frames).

>>> from rnnlm import frames
>>> model = frames.train("JapaneseVowels_TRAIN.ts", test="JapaneseVowels_TEST.ts", out="runs/jv")
>>> model = frames.load("runs/jv")
"""

from rnnlm.frames.api import FrameModel, load, train

__all__ = ["FrameModel", "load", "train"]
