"""A worker that runs a command-line program for each pset and parses its output.

Here the program is `expr`; in a real study it is your simulation binary. A non-zero exit
status raises, so the pset lands in results.missing with the program's stderr.
"""

import subprocess

import psmpi


def run_program(pset):
    cmd = ["expr", str(pset["a"]), "*", str(pset["b"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, 1):  # expr exits 1 when the result is 0
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.strip()}")
    return {"product": int(proc.stdout)}


psmpi.init()

psets = psmpi.params.product({"a": [2, 3, 4]}, {"b": [0, 5]})
results = psmpi.map(run_program, psets, verbose=0)
print(results.results.to_string())
assert results.results["product"].tolist() == [0, 10, 0, 15, 0, 20]
