"""rnnlm: train, evaluate and sample recurrent language models on any text."""

__version__ = "0.1.0"
