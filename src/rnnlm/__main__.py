"""``python -m rnnlm`` (and ``torchrun -m rnnlm``) runs the command line."""

import sys

from rnnlm.cli import main

sys.exit(main())
