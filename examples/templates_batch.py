"""Batch jobs from templates: one directory per pset, and a script that submits them all.

    examples/templates/calc/input.txt               copied into every pset directory
    examples/templates/machines/local/jobscript     run here with `sh` (info.yaml: subcmd: sh)
    examples/templates/machines/cluster/jobscript   submitted with `sbatch` on a cluster

prep_batch writes calc/<pset_hash>/{input.txt,jobscript_local,jobscript_cluster} with the
$placeholders filled in, and calc/run_local.sh and calc/run_cluster.sh. On a cluster you
would run `sh calc/run_cluster.sh`; here a psmpi map runs each jobscript_local and
collects the outputs. Extending the study writes only the new directories, and the
run scripts keep the earlier submit lines, commented out.
"""

import os
import pathlib

import psmpi

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"


def run_job(pset):
    # The same directory name prep_batch chose: the pset's hash.
    directory = os.path.join("calc", psmpi.params.pset_hash(pset))
    psmpi.run_command(["sh", "jobscript_local"], cwd=directory, timeout=60)
    with open(os.path.join(directory, "output.txt")) as fh:
        return {"cells": float(fh.read())}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

psets = psmpi.params.product({"length": [1.0, 2.5]}, {"resolution": [10, 20]})
batch = psmpi.prep_batch(psets, TEMPLATES, "calc")
print(batch[["length", "resolution", "_pset_dir", "_new"]].to_string())
first = psmpi.map(run_job, psets, name="jobs", verbose=0)

# Later: a longer length. Only its two psets get new directories and active submit lines.
more = psmpi.params.product({"length": [1.0, 2.5, 4.0]}, {"resolution": [10, 20]})
batch = psmpi.prep_batch(more, TEMPLATES, "calc")
print(pathlib.Path("calc/run_cluster.sh").read_text())
second = psmpi.map(run_job, more, name="jobs", verbose=0)  # computes the two new psets

print(second.results.to_string())
assert int(batch["_new"].sum()) in (0, 2)  # 0 when this example runs again in the same place
assert second.results["cells"].tolist() == [10, 20, 25, 50, 40, 80]
