"""``python -m ipai_ops``: the same as the ``ipai-ops`` command."""

import sys

from ipai_ops.cli import main

sys.exit(main())
