"""Matching stored rows to psets on resume: the numpy index against a plain reference."""

from __future__ import annotations

import random

import numpy as np
import pytest

import psmpi
from psmpi.driver.source import ResumeIndex, batches


def reference(hashes: list[str], queries: list[str]) -> list[int]:
    """The matching with multiplicity, written plainly: earliest unmatched row first."""
    free: dict[str, list[int]] = {}
    for row, digest in enumerate(hashes):
        free.setdefault(digest, []).append(row)
    return [free[q].pop(0) if free.get(q) else -1 for q in queries]


@pytest.mark.parametrize("seed", range(20))
def test_index_matches_the_reference_in_any_batching(seed):
    rng = random.Random(seed)
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(30)]
    hashes = [rng.choice(pool) for _ in range(rng.randint(0, 200))]  # many duplicates
    queries = [rng.choice(pool) for _ in range(rng.randint(0, 300))]
    index = ResumeIndex(np.array(hashes, dtype="S32"))
    got, at = [], 0
    while at < len(queries):  # batches of random sizes, some with repeated hashes, some not
        size = rng.choice([1, 2, 7, 50])
        got += index.take(queries[at:at + size]).tolist()
        at += size
    assert got == reference(hashes, queries)


def test_an_empty_index_and_an_empty_batch():
    assert ResumeIndex(np.array([], dtype="S32")).take(["a" * 32]).tolist() == [-1]
    assert ResumeIndex(np.array([b"a" * 32])).take([]).tolist() == []


def test_batches_deliver_what_came_before_an_error():
    def items():
        yield from range(5)
        raise ValueError("bad item")

    got = batches(items(), 3)
    assert next(got) == [0, 1, 2]
    assert next(got) == [3, 4]
    with pytest.raises(ValueError, match="bad item"):
        next(got)


def test_resume_of_a_generator_keeps_what_came_before_a_bad_pset(tmp_path):
    out = tmp_path / "g.h5"
    first = psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(10)], out=out,
                      backend="serial", verbose=0, name="m")
    assert len(first) == 10

    def psets():
        yield from ({"a": a} for a in range(15))
        yield {"a": [1, object()]}  # no canonical form: refused when read

    with pytest.raises(psmpi.PsetError, match="pset 15"):
        psmpi.map(lambda p: {"y": p["a"]}, psets(), out=out, backend="serial", verbose=0,
                  name="m")
    stored = psmpi.read(out, "m")["a"].tolist()
    # the resumed rows stay, none twice; groups start at one pset, so the first new pset
    # ran alone and was committed before the group that met the bad pset
    assert len(stored) == len(set(stored)) and set(range(11)) <= set(stored) <= set(range(15))
