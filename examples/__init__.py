"""Worked examples of corosm machines; each folder's README says how to run it."""
