"""A study whose rows (1 kB each) do not fit on the small file system of tests/test_disk_full.py."""

import sys

import psmpi


def worker(pset):
    return {"text": f"{pset['a']:06d}" * 170}


psmpi.init(backend="serial", verbose=0)
res = psmpi.map(worker, [{"a": a} for a in range(int(sys.argv[2]))], out=sys.argv[1],
                name="full", commit_rows=50)
print("complete", len(res))
