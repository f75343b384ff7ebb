"""``python -m corosm.shards reshard ...``: the shards' command line (see :mod:`.reshard`)."""

from __future__ import annotations

import sys

from corosm.shards.reshard import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "reshard":
        print("usage: python -m corosm.shards reshard --help", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
