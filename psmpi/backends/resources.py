"""Per-pset resources: the ``"ray": {...}`` entry a pset may carry, as in paramsurvey.

Checked by :mod:`psmpi.driver.source` before anything runs, on every backend, so this needs no ray
and imports nothing of psmpi; the ray backend turns them into task options.
"""

from __future__ import annotations

import math
from typing import Any

# Per-pset options of the ray backend ride in a pset under this key, as in paramsurvey:
# {"a": 1, "ray": {"num_gpus": 1}}. They are not parameters: from here on such a pset is a
# ResourcedPset without the key (not hashed, stored or given to the worker) that keeps them
# in .resources. Other backends ignore them.
RESOURCES_KEY = "ray"

# Per-pset options, as in paramsurvey; num_cores is its alias of num_cpus.
PSET_KEYS = ("name", "memory", "num_cpus", "num_cores", "num_gpus")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resource_problems(resources: dict) -> list[str]:
    """Why a pset's ``"ray": {...}`` options are invalid, each with its fix; [] if fine.

    Needs no ray: psets are checked before anything runs, on every backend.

    >>> resource_problems({"num_gpus": 1, "memory": 2e9, "name": "big"})
    []
    >>> resource_problems({"num_gpu": 1})
    ["per-pset ray option 'num_gpu' is unknown; use name, memory, num_cpus, num_cores, num_gpus"]
    """
    problems = []
    for key, value in resources.items():
        if key not in PSET_KEYS:
            problems.append(f"per-pset ray option {key!r} is unknown; use {', '.join(PSET_KEYS)}")
        elif key == "name":
            if not isinstance(value, str) or not value:
                problems.append("per-pset ray option 'name' must be a non-empty str "
                                f"(got {value!r})")
        elif key == "memory":
            if not is_number(value) or value <= 0:
                problems.append(f"per-pset ray option 'memory' must be bytes > 0 (got {value!r})")
        elif not is_number(value) or value < 0:
            problems.append(f"per-pset ray option {key!r} must be a number >= 0 (got {value!r})")
    if "num_cpus" in resources and "num_cores" in resources:
        problems.append("per-pset ray options num_cpus and num_cores are the same; give one")
    return problems


class ResourcedPset(dict):
    """The parameters of a pset that carried per-pset ray options, kept in ``resources``."""

    resources: dict


def split_resources(pset: Any) -> Any:
    """A pset with a ``"ray": {...}`` entry as a ResourcedPset without it; others unchanged."""
    if type(pset) is not dict or type(pset.get(RESOURCES_KEY)) is not dict:
        return pset
    split = ResourcedPset((k, v) for k, v in pset.items() if k != RESOURCES_KEY)
    split.resources = pset[RESOURCES_KEY]
    return split
