"""Small helpers for users' scripts: the memory of this process.

``print(psmpi.utils.vmem())`` in a few places of a study finds where memory goes; psmpi puts
the peak resident set size of every worker process in ``results.stats`` and the run log.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def format_bytes(n: float | None) -> str:
    """``123456789`` -> ``'118 MiB'``; None -> ``'n/a'``."""
    if n is None or n != n:
        return "n/a"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    for unit in units:
        if abs(n) < 1024 or unit == units[-1]:
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.3g} {unit}"


def peak_rss() -> int:
    """The peak resident set size of this process so far, in bytes (0 if unknown)."""
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class Memory(NamedTuple):
    """The memory of one process, in bytes; None where the platform does not say."""

    rss: int | None       # resident set size now
    peak_rss: int         # the largest resident set size so far
    virtual: int | None   # virtual memory size now

    def __str__(self) -> str:
        return (f"rss {format_bytes(self.rss)}, peak rss {format_bytes(self.peak_rss)}, "
                f"virtual {format_bytes(self.virtual)}")


def vmem() -> Memory:
    """The memory this process uses now, and its peak.

    Returns
    -------
    Memory
        ``rss``, ``peak_rss`` and ``virtual`` in bytes (``rss`` and ``virtual`` are None
        where ``/proc/self/statm`` does not exist, e.g. macOS). ``print()`` shows them in
        KiB/MiB/GiB.

    Examples
    --------
    >>> import psmpi
    >>> m = psmpi.utils.vmem()
    >>> m.peak_rss > 0
    True
    >>> str(m).startswith("rss ")
    True
    """
    rss = virtual = None
    try:
        with open("/proc/self/statm") as f:
            size, resident = f.read().split()[:2]
        rss, virtual = int(resident) * _PAGE_SIZE, int(size) * _PAGE_SIZE
    except OSError:
        pass
    # getrusage and statm count a little differently: the peak is never below the present.
    return Memory(rss, max(peak_rss(), rss or 0), virtual)
