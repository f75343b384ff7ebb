"""``python -m corosm.bench``: the benchmark suite without the ``corosm`` command."""

import sys

from corosm.bench.cli import main

sys.exit(main())
