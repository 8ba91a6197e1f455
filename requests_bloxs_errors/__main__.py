"""``python -m requests_bloxs_errors``: see :mod:`requests_bloxs_errors.cli`."""

import sys

from .cli import main

sys.exit(main())
