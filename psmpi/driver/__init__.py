"""One map on the driver: the orchestration loop and what it drives.

``run``: :class:`~psmpi.driver.run.MapRun`, the loop drawn at its top; ``source``: where the
psets come from, their checks and resume; ``sharding``: which shard of a study this map
computes and which psets that is; ``grouping``: group sizes; ``inflight``: the psets
handed out and not back (a grid's spans as one entry each); ``crashguard``: poison
psets; ``recorder``: outcomes to rows, committed in batches; ``workflow``: simulate, backup
and git around a map.

May import everything below it: the foundations, :mod:`psmpi.store`, :mod:`psmpi.worker`,
:mod:`psmpi.backends`, :mod:`psmpi.watch` and :mod:`psmpi.history`. Only :mod:`psmpi.api`
imports the driver.
"""
