"""What a running survey tells the world, seen from the driver.

``progress``: the terminal, the run log and Carbon, every so often; ``logfile``: the hidden
per-run log; ``carbon``: metrics to a Graphite server; ``perf``: the statistics merged from
every group's outcome; ``stalls``: workers that hold a pset for too long.

May import the foundations, :mod:`psmpi.worker` (the outcomes it reads), and the backend
interface :mod:`psmpi.backends.base` (what a worker holds); never the driver, the tools or
the CLI.
"""
