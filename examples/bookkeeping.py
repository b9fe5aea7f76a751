"""Run ids, pset ids and per-pset calc directories; a dry run; a backup; a repeat.

    python examples/bookkeeping.py
    .venv/bin/mpiexec -n 3 .venv/bin/python examples/bookkeeping.py

Each pset writes a big array into its own directory calc/<pset_id>/ and returns a summary.
The study first runs as a simulation (nothing computed, the real file untouched), then for
real with a backup of the file it extends, then once more with repeat=True.
"""

import os

import numpy as np

import psmpi


def field(pset):
    here = psmpi.context()  # the bookkeeping of this pset: run_id, pset_id, calc_dir, ...
    os.makedirs(here.calc_dir, exist_ok=True)
    values = np.sin(np.linspace(0, pset["k"], 10_000))
    np.save(os.path.join(here.calc_dir, "field.npy"), values)  # too big for a table column
    return {"mean": float(values.mean())}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

coarse = psmpi.params.product({"k": [1.0, 2.0, 3.0]})
psmpi.map(field, coarse, name="field", verbose=0)

finer = psmpi.params.product({"k": [1.0, 1.5, 2.0, 2.5, 3.0]})
dry = psmpi.map(field, finer, name="field", simulate=True, verbose=0)
print(f"a real run would reuse {dry.progress.resumed} psets and compute {dry.stats.computed}")

real = psmpi.map(field, finer, name="field", backup=True, verbose=0)
again = psmpi.map(field, finer, name="field", repeat=True, verbose=0)

stored = psmpi.read(real.path, name="field")
print(stored[["k", "mean", "_run_seq", "_pset_seq", "_pset_id", "_calc_dir"]].to_string())
assert len(stored) == 3 + 2 + 5  # coarse, the finer grid's two new psets, the repeat
for row in stored.to_dict("records"):
    assert np.load(os.path.join(row["_calc_dir"], "field.npy")).mean() == row["mean"]
print("backups:", sorted(f for f in os.listdir(".") if ".bak-" in f))
