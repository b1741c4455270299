"""rnnlm: train, evaluate and sample recurrent language models on any text.

>>> import rnnlm
>>> lm = rnnlm.train("my_text.txt", cell="lstm", epochs=5, out="runs/mine")
>>> lm = rnnlm.load("runs/mine")
>>> print(lm.generate("Once upon", length=200, temperature=0.8))
"""

__version__ = "0.1.0"

from rnnlm.core.errors import CheckpointError, DataError, RnnlmError, TrainingError, VocabError
from rnnlm.lm.api import LanguageModel, load, train
from rnnlm.lm.config import DataConfig, GenerateConfig, LMTrainConfig, ModelConfig, RunConfig
from rnnlm.training.config import TrainConfig

__all__ = [
    "CheckpointError",
    "DataConfig",
    "DataError",
    "GenerateConfig",
    "LMTrainConfig",
    "LanguageModel",
    "ModelConfig",
    "RnnlmError",
    "RunConfig",
    "TrainConfig",
    "TrainingError",
    "VocabError",
    "load",
    "train",
]
