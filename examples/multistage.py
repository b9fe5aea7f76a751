"""A two-stage study: stage 2 multiplies stage 1's results by a new parameter."""

import psmpi


def stage1(pset):
    return {"area": pset["width"] * pset["height"]}


def stage2(pset):
    return {"volume": pset["area"] * pset["depth"]}


psmpi.init()

shapes = psmpi.params.product({"width": [1, 2, 3]}, {"height": [10, 20]})
first = psmpi.map(stage1, shapes, name="stage1")

# Each stage-1 row (its pset and result columns) times every depth.
boxes = psmpi.params.product(first.results, {"depth": [0.5, 2.0]})
second = psmpi.map(stage2, boxes, name="stage2")

print(second.results.to_string())
assert len(second) == 12
assert second.results["volume"].max() == 3 * 20 * 2.0
