"""PostProcConfig: defaults, `enabled`, and validation messages that name the field."""

import math

import pytest

from postproc import PostProcConfig


def test_defaults_do_nothing() -> None:
    cfg = PostProcConfig()
    assert (cfg.beta, cfg.orth, cfg.layer, cfg.max_sz) == (0.0, False, 0, 0)
    assert not cfg.enabled


@pytest.mark.parametrize("kwargs", [{"beta": 1e-5}, {"orth": True}, {"layer": 3}, {"max_sz": 64}])
def test_any_setting_enables(kwargs: dict) -> None:
    assert PostProcConfig(**kwargs).enabled


def test_int_beta_becomes_float() -> None:
    cfg = PostProcConfig(beta=1)
    assert isinstance(cfg.beta, float) and cfg.beta == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("beta", -1e-5),
        ("beta", math.nan),
        ("beta", math.inf),
        ("beta", "3e-5"),
        ("beta", True),
        ("orth", 1),
        ("orth", "yes"),
        ("layer", -1),
        ("layer", 1.5),
        ("layer", True),
        ("max_sz", -64),
        ("max_sz", "64"),
    ],
)
def test_bad_values_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as err:
        PostProcConfig(**{field: value})
    msg = str(err.value)
    assert f"PostProcConfig.{field}" in msg
    assert repr(value) in msg or str(value) in msg

