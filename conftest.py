"""Doctest collection: skip backend modules whose optional dependency is not installed."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("ray") is None:
    collect_ignore.append("psmpi/backends/ray.py")
if importlib.util.find_spec("mpi4py") is None:
    collect_ignore.append("psmpi/backends/mpi.py")
