"""``python -m requests_bloxs_errors``: see :mod:`requests_bloxs_errors.tools.cli`."""

import sys

from .tools.cli import main

sys.exit(main())
