"""Settings: environment > map() > init() > default, and clear errors naming the argument."""

import pytest

from psmpi import config
from psmpi.errors import ConfigError


def test_defaults():
    s = config.resolve({}, {}, environ={})
    assert s.verbose == 1 and s.limit == 0 and s.group_size is None
    assert s.out is config.AUTO and s.keep_results is True and s.backend is None


def test_precedence_env_over_map_over_init():
    init = {"limit": 5, "verbose": 2, "group_size": 3}
    mapkw = {"limit": 7, "verbose": 0}
    s = config.resolve(mapkw, init, environ={"PSMPI_LIMIT": "1"})
    assert s.limit == 1          # environment wins
    assert s.verbose == 0        # map() beats init()
    assert s.group_size == 3     # init() beats default


@pytest.mark.parametrize("var,text,attr,value", [
    ("PSMPI_BACKEND", "serial", "backend", "serial"),
    ("PSMPI_VERBOSE", "3", "verbose", 3),
    ("PSMPI_NCORES", "-1", "ncores", -1),
    ("PSMPI_GROUP_SIZE", "auto", "group_size", None),
    ("PSMPI_MAX_TASKS_PER_CHILD", "4", "max_tasks_per_child", 4),
    ("PSMPI_KEEP_RESULTS", "no", "keep_results", False),
    ("PSMPI_OUT", "none", "out", None),
    ("PSMPI_OUT", "x.h5", "out", "x.h5"),
    ("PSMPI_NAME", "stage2", "name", "stage2"),
    ("PSMPI_FSYNC_INTERVAL", "0.5", "fsync_interval", 0.5),
])
def test_every_env_var_is_read(var, text, attr, value):
    assert getattr(config.resolve({}, {}, environ={var: text}), attr) == value


def test_unknown_kwarg_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown keyword argument 'grup_size'.*did you mean 'group_size'"):
        config.check_kwargs({"grup_size": 3}, "map()")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"group_size": -3}, r"group_size must be an int >= 1.*got -3"),
    ({"verbose": 7}, r"verbose must be an int >= 0 and <= 3"),
    ({"limit": "10"}, r"limit must be an int"),
    ({"backend": "dask"}, r"backend must be one of"),
    ({"ncores": 0}, r"ncores must be a non-zero int"),
    ({"keep_results": 1}, r"keep_results must be True or False"),
    ({"multiprocessing": ["x"]}, r"multiprocessing must be a dict"),
    ({"name": "a/b"}, r"name must be a non-empty str"),
])
def test_wrong_types_name_the_argument(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.check_kwargs(kwargs, "map()")


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="PSMPI_LIMIT='lots'"):
        config.resolve({}, {}, environ={"PSMPI_LIMIT": "lots"})
    with pytest.raises(ConfigError, match="PSMPI_VERBOSE"):
        config.resolve({}, {}, environ={"PSMPI_VERBOSE": "9"})


def test_every_option_with_env_var_is_documented_in_the_settings_reference():
    import pathlib
    page = (pathlib.Path(__file__).parent.parent / "docs" / "reference" / "settings.md").read_text()
    for option in config.OPTIONS.values():
        if option.env_var:
            assert f"`{option.env_var}`" in page, option.env_var


@pytest.mark.parametrize("var,text,attr,value", [
    ("PARAMSURVEY_BACKEND", "serial", "backend", "serial"),
    ("PARAMSURVEY_VERBOSE", "3", "verbose", 3),
    ("PARAMSURVEY_VSTATS", "2", "vstats", 2),
    ("PARAMSURVEY_LIMIT", "10", "limit", 10),
    ("PARAMSURVEY_NCORES", "-1", "ncores", -1),
    ("PARAMSURVEY_MAX_TASKS_PER_CHILD", "3", "max_tasks_per_child", 3),
    ("PARAMSURVEY_GROUP_SIZE", "5", "group_size", 5),
])
def test_paramsurvey_variables_are_aliases(var, text, attr, value):
    """paramsurvey's documented variables work unchanged, over map() and init() keywords."""
    assert getattr(config.resolve({attr: None if attr == "backend" else 1}, {},
                                  environ={var: text}), attr) == value


def test_psmpi_variables_win_over_paramsurvey_ones():
    s = config.resolve({}, {}, environ={"PARAMSURVEY_LIMIT": "10", "PSMPI_LIMIT": "2",
                                        "PARAMSURVEY_VERBOSE": "3"})
    assert s.limit == 2 and s.verbose == 3


def test_only_paramsurvey_settings_have_aliases():
    """paramsurvey has no such variables: they are not read, so a typo is not a setting."""
    s = config.resolve({}, {}, environ={"PARAMSURVEY_OUT": "none", "PARAMSURVEY_TIMEOUT": "1"})
    assert s.out is config.AUTO and s.timeout is None
    aliased = {name for name, option in config.OPTIONS.items() if len(option.env_vars) > 1}
    assert aliased == {"backend", "verbose", "vstats", "limit", "ncores",
                       "max_tasks_per_child", "group_size"}


def test_a_bad_paramsurvey_variable_is_named():
    with pytest.raises(ConfigError, match="PARAMSURVEY_VERBOSE"):
        config.resolve({}, {}, environ={"PARAMSURVEY_VERBOSE": "loud"})
    with pytest.raises(ConfigError, match="PARAMSURVEY_BACKEND"):
        config.resolve({}, {}, environ={"PARAMSURVEY_BACKEND": "dask"})
