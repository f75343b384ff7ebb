"""The Redis-protocol (RESP2) front end: real Redis clients and tools talk to corosm.

* :mod:`~corosm.frontends.resp.protocol`: sans-I/O parser and encoder;
* :mod:`~corosm.frontends.resp.commands`: the command table (arguments to
  key-value inputs, outputs to replies);
* :mod:`~corosm.frontends.resp.server`: the asyncio protocol and
  :func:`start_resp_server`.
"""
