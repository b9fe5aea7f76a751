"""Psets that fail land in results.missing with their traceback; run them again.

The first map fails for every third pset. The second map, with the bug fixed, gets only the
missing psets and writes their rows into the same map in the file: the study is complete.
"""

import psmpi


def buggy(pset):
    if pset["n"] % 3 == 0:
        raise ZeroDivisionError(f"bad n={pset['n']}")
    return {"inverse": 1 / pset["n"]}


def fixed(pset):
    return {"inverse": 1 / pset["n"] if pset["n"] else float("inf")}


psmpi.init()

psets = [{"n": n} for n in range(12)]
first = psmpi.map(buggy, psets, name="inverse", verbose=0)
print(len(first), "done,", len(first.missing), "missing:")
print(first.missing.df[["n", "_exception"]].to_string())

second = psmpi.map(fixed, first.missing.to_psets(), name="inverse", verbose=0)
print("re-ran", len(second), "psets")

everything = psmpi.read(first.path, name="inverse")
assert sorted(everything["n"]) == list(range(12))
