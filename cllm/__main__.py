"""``python -m cllm ...`` (and ``torchrun -m cllm ...``): the same as the ``cllm`` command."""

import sys

from cllm.cli import entry

sys.exit(entry())
