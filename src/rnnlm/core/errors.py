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


class OutputError(RnnlmError):
    """A file cannot be written: the disk is full, the folder is read-only, an I/O error. The file written to keeps
    its previous content (core/atomic.py)."""


class RunLockedError(RnnlmError):
    """Another process is writing to the run directory (core/lock.py)."""


class TrainingError(RnnlmError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class ConfigError(RnnlmError, ValueError):
    """A setting has a value that cannot work; the message names the flag, the rule and the value."""


class NonFiniteLogitsError(RnnlmError):
    """The next-token logits give no distribution to draw from: the model has diverged.

    Raised with the same message by the torch path (generate.sample_next) and the compiled decoder
    (lm/decoder.py), so that callers need not know which one ran.
    """

    def __init__(self) -> None:
        super().__init__(
            "cannot draw the next token: the model's logits hold NaN (or, when sampling, +inf, or are all -inf), "
            "so they give no distribution; its weights have probably diverged. Use an earlier checkpoint, or "
            "train again with a lower learning rate or gradient clipping"
        )
