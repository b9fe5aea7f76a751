"""git=True: every map is recorded as a commit with its run id.

    python examples/git_record.py

Run it in an empty directory: if that directory is not in a git repository yet, the example
makes it one (with a local committer name), so that git=True has somewhere to commit. Inside
an existing repository it commits git_record.h5 there, and nothing else you have staged.
"""

import os
import subprocess

import psmpi


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def square(pset):
    return {"y": pset["x"] ** 2}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

if subprocess.run(["git", "rev-parse"], capture_output=True).returncode != 0:
    git("init", "-q", ".")
    git("config", "user.name", "psmpi example")
    git("config", "user.email", "example@psmpi.invalid")

first = psmpi.map(square, psmpi.params.product({"x": [1, 2, 3]}), name="squares", git=True,
                  verbose=0)
more = psmpi.map(square, psmpi.params.product({"x": [1, 2, 3, 4]}), name="squares", git=True,
                 verbose=0)  # resumes the first three, computes x=4
print(git("log", "-2", "--format=%h %s"))
run_ids = set(psmpi.read(more.path)["_run_id"])
log = git("log", "-2", "--format=%s")
assert all(f"psmpi run {run_id}" in log for run_id in run_ids), (run_ids, log)
print(os.path.basename(more.path), "is committed:", git("ls-files", more.path).strip() != "")
