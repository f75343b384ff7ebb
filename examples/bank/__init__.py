"""A small bank, durable and served: see README.md in this folder.

``machine`` holds the machine (``corosm serve --machine
examples.bank.machine:Bank``), ``checks`` the slow blocking code its audit
calls, ``sim`` its simulation spec (``corosm sim --machine
examples.bank.sim:SPEC``).
"""
