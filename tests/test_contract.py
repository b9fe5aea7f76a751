"""The behaviour contract (tests/contract.py) on every in-process backend."""

import contract
import pytest

BACKENDS = ["serial", "multiprocessing", "ray"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check", sorted(contract.CHECKS))
def test_contract(backend, check, tmp_path):
    contract.CHECKS[check](backend, str(tmp_path))
