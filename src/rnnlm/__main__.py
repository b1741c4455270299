"""``python -m rnnlm`` (and ``torchrun -m rnnlm``): the same as the ``rnnlm`` command, also for an environment whose
scripts folder is not on PATH."""

import sys

from rnnlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
