"""A module that calls ``sys.exit`` when imported: ``corosm serve --machine`` says so."""

import sys

sys.exit(3)
