"""Greedy optimisation: many small maps in a loop, each choosing the best alternative.

Every step is a map of its own (named step-0, step-1, ...), so killing this script and
running it again resumes at the step where it stopped.
"""

import psmpi


def score(pset):
    # A toy objective with its optimum at x=7, y=-3.
    return {"score": -((pset["x"] - 7) ** 2) - (pset["y"] + 3) ** 2}


psmpi.init()

best = {"x": 0, "y": 0}
for step in range(20):
    candidates = [dict(best, x=best["x"] + dx, y=best["y"] + dy)
                  for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    res = psmpi.map(score, candidates, name=f"step-{step}", verbose=0)
    top = res.results.sort_values("score", ascending=False).iloc[0]
    if top["x"] == best["x"] and top["y"] == best["y"]:
        break
    best = {"x": int(top["x"]), "y": int(top["y"])}

print("best", best, "after", step + 1, "steps")
assert best == {"x": 7, "y": -3}
