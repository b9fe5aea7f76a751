"""Backend options (``serial={...}``, ``multiprocessing={...}``, ``mpi={...}``, ``ray={...}``):
each backend declares them, one function checks them, an unknown key is an error everywhere."""

from __future__ import annotations

import dataclasses

import pytest

import psmpi
from psmpi.backends import backend_class
from psmpi.backends.base import Options, checked_options, option
from psmpi.errors import ConfigError


def square(pset):
    return {"y": pset["a"] ** 2}


@pytest.mark.parametrize("backend,known", [
    ("serial", "the serial backend takes no options"),
    ("multiprocessing", "the multiprocessing backend knows start_method"),
])
def test_an_unknown_option_names_the_key_the_backend_and_the_known_ones(backend, known):
    with pytest.raises(ConfigError) as err:
        psmpi.map(square, [{"a": 3}], out=None, verbose=0, backend=backend,
                  **{backend: {"bogus": 1}})
    assert str(err.value) == f"{backend}={{...}} got unknown option(s) ['bogus']; {known}"


def test_an_unknown_mpi_option_is_refused_before_mpi_starts():
    # The MPI backend checks its options before it imports mpi4py, so this needs no launcher.
    with pytest.raises(ConfigError) as err:
        backend_class("mpi")({"in_flight": 1, "bogus": 1, "poll_maxx": 0.1})
    assert str(err.value) == ("mpi={...} got unknown option(s) ['bogus', 'poll_maxx']; the mpi "
                              "backend knows abort_on_timeout, in_flight, poll_max")


def test_a_wrong_value_names_the_option_and_what_it_must_be():
    with pytest.raises(ConfigError, match=r"multiprocessing=\{'start_method': \.\.\.\} must be "
                                          r"one of .*fork.* \(got 'forkk'\)"):
        psmpi.map(square, [{"a": 3}], out=None, verbose=0, backend="multiprocessing",
                  multiprocessing={"start_method": "forkk"})
    with pytest.raises(ConfigError, match=r"mpi=\{'in_flight': \.\.\.\} must be 1, 2 or None "
                                          r"\(adaptive\) \(got True\)"):
        backend_class("mpi")({"in_flight": True})


@dataclasses.dataclass(frozen=True)
class Declared(Options):
    count: int = option(1, "be an int >= 1", lambda value: value >= 1)
    seconds: float = option(0.5, "be seconds > 0", lambda value: value > 0)
    name: str | None = option(None, "be a str or None")
    flag: bool = option(False, "be True or False")


class PassingOn(Options):
    PASSED_ON = "rest"


@dataclasses.dataclass(frozen=True)
class Passed(PassingOn):
    count: int = option(1, "be an int")
    rest: dict = dataclasses.field(default_factory=dict)


def test_checked_options_fills_defaults_and_checks_types():
    assert checked_options(Declared, "x", {}) == Declared(1, 0.5, None, False)
    assert checked_options(Declared, "x", {"seconds": 2, "name": "n", "flag": True}) == \
        Declared(1, 2, "n", True)  # an int is a float
    for bad, must in [({"count": True}, "count': ...} must be an int >= 1 (got True)"),
                      ({"count": 0}, "must be an int >= 1 (got 0)"),
                      ({"count": 1.0}, "must be an int >= 1 (got 1.0)"),
                      ({"seconds": False}, "must be seconds > 0 (got False)"),
                      ({"seconds": "1"}, "must be seconds > 0 (got '1')"),
                      ({"name": 3}, "must be a str or None (got 3)"),
                      ({"flag": 1}, "must be True or False (got 1)")]:
        with pytest.raises(ConfigError) as err:
            checked_options(Declared, "x", bad)
        assert str(err.value).startswith("x={'") and str(err.value).endswith(must), bad


def test_options_passed_on_are_collected_not_refused():
    options = checked_options(Passed, "ray", {"count": 2, "num_gpus": 1, "resources": {}})
    assert options == Passed(2, {"num_gpus": 1, "resources": {}})
    with pytest.raises(ConfigError, match="must be an int"):
        checked_options(Passed, "ray", {"count": "2", "num_gpus": 1})
