"""Post-processing: what is still missing, filtering rows, printing a table.

The first map stops after five psets (as a run killed by its time limit would);
missing_psets() finds the rest of the space in the file, a second map computes them, and
filter_rows()/print_table() pick and show the interesting rows.
"""

import psmpi


def simulate(pset):
    return {"energy": (pset["x"] - 1.5) ** 2 * pset["k"], "stable": pset["x"] > 0}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

space = psmpi.params.product({"x": [0, 1, 2, 3]}, {"k": [0.5, 1.0, 2.0]})
psmpi.map(simulate, space, name="sim", limit=5, verbose=0)

todo = psmpi.missing_psets(space, "postprocess.h5", name="sim")
print(len(todo), "of", len(space), "psets still missing")
psmpi.map(simulate, todo, name="sim", verbose=0)
assert len(psmpi.missing_psets(space, "postprocess.h5", name="sim")) == 0

# Which values of x have no result at all with k == 4? (compare on x only, psyrun-style)
print("x without k=4:", psmpi.missing_psets({"x": [0, 1, 2, 3]},
                                            psmpi.filter_rows(psmpi.read("postprocess.h5", "sim"),
                                                              [("k", "==", 4.0)]),
                                            on=["x"]).to_df()["x"].tolist())

df = psmpi.read("postprocess.h5", "sim")
low = psmpi.filter_rows(df, [("stable", "==", True), ("energy", "<", 1.0),
                             ("k", "in", [0.5, 1.0])])
psmpi.print_table(low.sort_values(["x", "k"]), ["x", "k", "energy"])
assert sorted(zip(low["x"], low["k"])) == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
