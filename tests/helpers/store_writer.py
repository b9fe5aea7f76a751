"""Writer process for tests/test_store_kill.py: appends deterministic rows until told or killed.

    python store_writer.py PATH TARGET_ROWS [--hold]

Prints ``WARNING <message>`` for each warning Store.open gave (a reclaimed lock), then
``READY <n_rows>``, appends rows n_rows.. TARGET_ROWS-1 in batches of random size, and
prints ``DONE <n_rows>``. With --hold it prints ``HOLD`` and keeps the store open until
its stdin is closed. Row values are functions of the row number only (see ``row``), so a
reader can check every committed value whatever the batch boundaries were.
"""

from __future__ import annotations

import os
import random
import sys
import warnings

import numpy as np

MAP = "sweep"
BLOCK = 20_000  # every block of rows brings a new column that is widened halfway through


def row(i: int) -> dict:
    """The row number ``i``: every kind of value, nulls, general and ragged values, new
    columns and widenings (int to float, int to general, array to ragged to a wider
    ragged dtype) per block."""
    block, offset = divmod(i, BLOCK)
    r = {"i": i, "x": i * 0.25 + 1.0 / (i + 1), "s": f"row-{i}-" + "é" * (i % 4),
         "b": i % 3 == 0, "opt": None if i % 7 == 0 else 2 * i,
         "a": np.array([[i, -i], [i % 5, 7]], dtype=np.int32)}
    r[f"w{block}"] = i if offset < BLOCK // 2 else i + 0.5
    r[f"g{block}"] = i if offset < BLOCK // 2 else [i]  # an int column widened to general
    r["r"] = [i, "x"] if i % 3 else (i,)  # general from the start
    r["q"] = None if i % 11 == 0 else np.full(i % 13, i * 0.5)  # ragged from the start
    r[f"v{block}"] = ragged(i)
    return r


def ragged(i: int) -> np.ndarray:
    """Column v<block>: fixed int32 arrays, then ragged ones (array -> ragged), then float64
    ragged ones (ragged int32 -> ragged float64, rewritten)."""
    offset = i % BLOCK
    if offset < BLOCK // 2:
        return np.array([i, -i], np.int32)
    if offset < 3 * BLOCK // 4:
        return np.full(1 + i % 3, i, np.int32)
    return np.full(1 + i % 3, i + 0.5)


def main() -> None:
    from psmpi.store import Store

    path, target = sys.argv[1], int(sys.argv[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = Store.open(path, fsync_interval=0.05)
    for w in caught:
        print("WARNING", w.message, flush=True)
    table = store.table(MAP)
    n = table.n_rows
    print("READY", n, flush=True)
    rng = random.Random(os.getpid())
    while n < target:
        batch = [row(i) for i in range(n, min(target, n + rng.randint(1, 400)))]
        for r in batch:
            problem = table.admit(r)
            if problem is not None:
                raise AssertionError(problem)
        n = table.append(batch).stop
    if "--hold" in sys.argv:
        print("HOLD", flush=True)
        sys.stdin.read()
    store.close()
    print("DONE", n, flush=True)


if __name__ == "__main__":
    main()
