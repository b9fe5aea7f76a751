"""What runs on a worker, whatever the backend: one group of psets through the user's
function.

``task``: the :class:`~psmpi.worker.task.Task` shipped to every worker and the plain-data
:class:`~psmpi.worker.task.GroupOutcome` it returns; ``context``: ``psmpi.context()``, what
the worker function may ask about its pset; ``timers``: ``psmpi.timer`` sections;
``setup``: the once-per-process set-up (``setup=``) and GPUs (``gpus_per_worker=``);
``spans``: a grid's psets rebuilt and hashed in bulk from index ranges.

May import the foundations (the top-level modules ``errors``, ``layout``, ``values``,
``params``, ``utils``) and :mod:`psmpi.store` (for the ids of :mod:`~psmpi.store.bookkeeping`),
nothing else: a worker process never loads the driver, the backends or the CLI.
"""
