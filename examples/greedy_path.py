"""A greedy walk downhill whose psets carry lists: the point as [x, y] and the path so far.

Each step is one small map over the moves from the best point found so far; the psets of
the next step are built from the best row of this one, lists included, so every row of the
file tells how its point was reached. Every step is a map of its own (step-0, step-1, ...):
run the script again and each step resumes from the file, computing nothing.
"""

import psmpi

VALLEY = (4, -2)  # the lowest point of the toy landscape
MOVES = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # (0, 0): stay, when nothing is lower


def height(pset):
    x, y = pset["point"]
    return {"height": (x - VALLEY[0]) ** 2 + 2 * (y - VALLEY[1]) ** 2,
            "steps_taken": len(pset["path"])}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

point, path = [0, 0], []
for step in range(20):
    psets = [{"point": [point[0] + dx, point[1] + dy], "path": path + [point]}
             for dx, dy in MOVES]
    res = psmpi.map(height, psets, name=f"step-{step}", verbose=0)
    best = res.results.sort_values("height", kind="stable").iloc[0]
    if best["point"] == point:  # staying put is lowest: a minimum
        break
    point, path = best["point"], best["path"]  # lists, read back as lists

print("minimum", point, "after", len(path), "moves; path", path)
assert point == list(VALLEY) and len(path) == abs(VALLEY[0]) + abs(VALLEY[1])
assert all(isinstance(p, list) for p in path)
