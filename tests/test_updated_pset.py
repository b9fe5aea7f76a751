"""A worker may return the updated pset (psweep's ``return {**pset, "y": ...}``): a result
key equal to a pset key is accepted when its value is equal, and stored once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psmpi.worker import task


def group_of(*psets: dict) -> list[tuple[int, dict]]:
    return list(enumerate(psets))


@pytest.mark.parametrize("given, returned", [
    (1, 1), (1, np.int64(1)), (np.int32(7), 7), (2.5, np.float64(2.5)),
    (math.nan, float("nan")), (np.float32("nan"), math.nan), ("x", np.str_("x")),
    (True, np.bool_(True)), (None, None), (b"b", b"b"), (1 + 2j, np.complex128(1 + 2j)),
    (np.arange(3), np.arange(3)), (np.array([1.0, math.nan]), np.array([1.0, math.nan])),
    ([1, {"k": math.nan}], [1, {"k": math.nan}]), ({"a": (1, 2)}, {"a": (1, 2)}),
])
def test_equal_values_are_the_same_value(given, returned):
    assert task.same_value(given, returned)
    assert task.result_problem({"p": returned, "y": 1}, {"p": given}) is None


@pytest.mark.parametrize("given, returned", [
    (1, 1.0), (1, True), (0, False), (1.0, 1), ("1", 1), (None, math.nan), (math.nan, None),
    (1, 2), ("x", "y"), (np.arange(3), np.arange(4)), (np.arange(3), np.arange(3.0)),
    (np.zeros(2), [0.0, 0.0]), ([1, 2], (1, 2)), ({"a": 1}, {"a": 1, "b": 2}), (1, np.arange(1)),
])
def test_different_values_or_type_families_differ(given, returned):
    assert not task.same_value(given, returned)
    kind, message = task.result_problem({"p": returned}, {"p": given})
    assert kind == task.BAD_RESULT
    assert "'p'" in message and repr(given)[:20] in message, message
    assert "{**pset" in message and "rename" in message, message


def test_the_message_shortens_long_values():
    kind, message = task.result_problem({"p": "x" * 10_000}, {"p": "y" * 10_000})
    assert kind == task.BAD_RESULT and len(message) < 600, message


def test_equal_pset_keys_are_dropped_from_the_result_on_both_paths():
    def updated(pset):
        return {**pset, "y": pset["a"] * 2}

    t = task.Task(updated, "m", "serial")
    columns = t(group_of({"a": 1, "s": "x"}, {"a": 2, "s": "z"}))  # the columnar path
    assert {k: list(v) for k, v in columns.columns.items()} == {
        "a": [1, 2], "s": ["x", "z"], "y": [2, 4]}  # ints as int64 arrays, str as tuples
    rows = t(group_of({"a": 1, "s": "x"}, {"a": 2, "s": "z", "t": 3.5}))  # the row path
    assert rows.columns is None and not rows.errors
    import pickle
    assert [pickle.loads(p) for p in rows.payloads] == [{"y": 2}, {"y": 4}]


def test_a_changed_pset_value_fails_that_pset_only():
    def changed(pset):
        return {**pset, "a": pset["a"] + (pset["a"] == 2), "y": 0}

    outcome = task.Task(changed, "m", "serial")(group_of({"a": 1}, {"a": 2}, {"a": 3}))
    assert list(outcome.errors) == [1] and outcome.errors[1][0] == task.BAD_RESULT
    assert "'a'" in outcome.errors[1][1] and "3" in outcome.errors[1][1]
