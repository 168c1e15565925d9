"""``python -m promptcache_operator``: the same as ``promptcache operator``."""

import sys

from promptcache_operator.cli import main

sys.exit(main())
