"""The Redis-protocol front end (RESP2; RESP3 after ``HELLO 3``) for Redis clients and tools.

* :mod:`~corosm.frontends.resp.protocol`: sans-I/O parser and encoder;
* :mod:`~corosm.frontends.resp.commands`: the command table (arguments to
  key-value machine inputs, or to replies known at once);
* :mod:`~corosm.frontends.resp.replies`: the machine's outputs as Redis replies;
* :mod:`~corosm.frontends.resp.serverinfo`: what ``CONFIG GET`` and ``INFO`` say;
* :mod:`~corosm.frontends.resp.limits`: :class:`RespLimits`, every size and time limit;
* :mod:`~corosm.frontends.resp.server`: the asyncio protocol,
  :func:`start_resp_server` and :func:`stop_resp_server`.

``corosm serve --resp-port N`` runs it beside HTTP, on the same runtime and journal.
"""
