"""User-facing errors: each message says what went wrong, where, and what to do about it.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""


class RnnlmError(Exception):
    """Base class for errors caused by the user's input, files or environment."""


class DataError(RnnlmError):
    """A text file or corpus cannot be used (missing, empty, not UTF-8, too short, ...)."""


class CorpusNotFoundError(DataError):
    """A named corpus is unknown, or could not be found or downloaded."""


class VocabError(RnnlmError):
    """Text holds tokens that the vocabulary cannot represent."""


class CheckpointError(RnnlmError):
    """A run directory or checkpoint is missing, corrupt, or incompatible with the request."""


class TrainingError(RnnlmError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class ConfigError(RnnlmError, ValueError):
    """A setting has a value that cannot work; the message names the flag, the rule and the value."""
