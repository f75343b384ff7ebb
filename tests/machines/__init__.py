"""Machines that tests serve with ``corosm serve --machine tests.machines.<module>:<Class>``."""
