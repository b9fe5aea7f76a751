"""Run a command-line program for each pset with psmpi.run_command.

`{n}` and `{scale:.2f}` in the arguments are filled in from the pset; no shell is
involved. A program that fails, is missing or runs too long fails its pset only, with the
reason in results.missing; with check=False the exit status is stored instead.
"""

import sys

import psmpi

# Stands in for your simulation binary: `program --n N --scale S` prints "mean <value>".
PROGRAM = [sys.executable, "-c",
           "import sys; n, s = int(sys.argv[2]), float(sys.argv[4]); print('mean', s * (n - 1) / 2)"]


def simulate(pset):
    out = psmpi.run_command(PROGRAM + ["--n", "{n}", "--scale", "{scale:.2f}"], pset, timeout=60)
    return {"mean": float(out["stdout"].split()[1]), "seconds": out["runtime"]}


def exit_status(pset):
    # The whole dict (returncode, stdout, stderr, runtime, timed_out) becomes the row.
    return psmpi.run_command(["{program}", "-c", "import sys, time; time.sleep({sleep}); "
                              "sys.exit({code})"], pset, timeout=2, check=False)


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

res = psmpi.map(simulate, psmpi.params.product({"n": [1, 10, 100]}, {"scale": [1.0, 0.5]}),
                verbose=0)
print(res.results[["n", "scale", "mean"]].to_string())
assert res.results["mean"].tolist() == [0.0, 0.0, 4.5, 2.25, 49.5, 24.75]

psets = [{"program": sys.executable, "sleep": 0, "code": 0},
         {"program": sys.executable, "sleep": 0, "code": 3},
         {"program": sys.executable, "sleep": 60, "code": 0},   # killed after timeout=2
         {"program": "no-such-simulator", "sleep": 0, "code": 0}]
res = psmpi.map(exit_status, psets, verbose=0)
print(res.results[["code", "sleep", "returncode", "timed_out"]].to_string())
print(res.missing.df["_exception"].str[:70].to_string())
assert res.results["returncode"].tolist() == [0, 3, -15]
assert res.missing.df["_exception"].str.contains("not found on PATH").all()
