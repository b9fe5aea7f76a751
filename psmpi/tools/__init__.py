"""What one does to results files after (or beside) a run: the library functions the
``psmpi`` command is a shell over.

``summary``: per-map status and the failures (``psmpi.status``, ``psmpi.failures``);
``merging``: ``psmpi.merge``, ``psmpi.merge_shards`` and removing maps; ``shards``: the
shard files of a study run as many jobs and their state; ``cleaning``: ``psmpi.clean``; ``report``:
the pictures of ``psmpi report``.

May import the foundations, :mod:`psmpi.store`, :mod:`psmpi.study` (filters) and
:mod:`psmpi.watch` (what is running now); never the driver, the backends or the CLI.
"""
