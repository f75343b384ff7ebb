"""corosm's benchmark suite (``corosm bench``, issue 7).

Modules: :mod:`.suite` (scenarios, alternation), :mod:`.contenders` (the
servers compared, as command lines), :mod:`.procs` (start/stop, pinning),
:mod:`.wrk` and :mod:`.redisbench` (load generators and their output),
:mod:`.hostinfo` (the machine, raw fdatasync rate), :mod:`.recovery` and
:mod:`.memory` (in-process scenarios run in fresh processes),
:mod:`.results`, :mod:`.report`, :mod:`.plots`, :mod:`.profile`, :mod:`.cli`.
Nothing here is imported by the library itself.
"""
