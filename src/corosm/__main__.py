"""``python -m corosm``: the same command line as the ``corosm`` script."""

from corosm.frontends.cli import main

raise SystemExit(main())
