"""A survey with a worker set-up (setup=) and GPUs, on any backend, for tests/test_setup.py.

    [mpiexec -n K] python setup_study.py BACKEND OUT DIR '{"option": value, ...}'

Every call of a set-up appends a JSON line (its SetupContext, pid and visible-devices
variables) to DIR/setup-<pid>, so the test counts set-up runs per process. Rank 0 prints one
JSON line: the rows, or the SetupError / ConfigError that map() raised. Options: ``n``
(psets), ``fail`` (the set-up raises), ``prefill`` (first commit that many psets with a
working set-up), ``crash`` (the pset with this ``a`` kills its worker process),
``uncaught`` (do not catch the SetupError: under MPI the job aborts), and any map() keyword.
"""

import dataclasses
import json
import os
import sys
import time

import psmpi

VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")


def note_setup(context, function: str) -> None:
    record = {**dataclasses.asdict(context), "pid": os.getpid(), "function": function,
              "env": {var: os.environ.get(var) for var in VARS}}
    with open(os.path.join(os.environ["SETUP_DIR"], f"setup-{os.getpid()}"), "a") as fh:
        fh.write(json.dumps(record) + "\n")


def setup(context):
    note_setup(context, "setup")
    return {"pid": os.getpid(), "model": "loaded"}


def failing_setup(context):
    note_setup(context, "failing_setup")
    raise ValueError("the model file is missing")


def worker(pset, system_kwargs, user_kwargs):
    if pset["a"] == user_kwargs.get("crash"):
        os._exit(3)
    time.sleep(0.02)
    loaded = system_kwargs["setup"]
    return {"pid": os.getpid(), "setup_pid": loaded["pid"],
            "same": psmpi.context().setup is loaded, "cuda": os.environ.get(VARS[0], ""),
            "others": ";".join(os.environ.get(var, "") for var in VARS[1:])}


def main(backend: str, out: str, directory: str, options: dict) -> None:
    os.environ["SETUP_DIR"] = directory
    n, fail, prefill = options.pop("n", 12), options.pop("fail", False), options.pop("prefill", 0)
    uncaught, crash = options.pop("uncaught", False), options.pop("crash", None)
    options.setdefault("group_size", 1)
    psmpi.init(backend=backend, verbose=0, vstats=0, **options)
    psets = [{"a": i} for i in range(n)]
    if prefill:
        psmpi.map(worker, psets, out=out, name="survey", setup=setup, limit=prefill)
    try:
        results = psmpi.map(worker, psets, out=out, name="survey",
                            setup=failing_setup if fail else setup,
                            user_kwargs={"crash": crash})
    except psmpi.SetupError as exc:
        if uncaught:
            raise
        print(json.dumps({"setup_error": str(exc), "rank": exc.rank, "host": exc.host,
                          "pid": exc.pid, "remote_traceback": exc.remote_traceback}))
        return
    except psmpi.ConfigError as exc:
        print(json.dumps({"config_error": str(exc)}))
        return
    rows = results.results[["a", "pid", "setup_pid", "same", "cuda", "others"]]
    print(json.dumps({"rows": rows.to_dict("records"), "failed": len(results.missing)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
