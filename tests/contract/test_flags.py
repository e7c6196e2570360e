"""Command-line flags generated from a dataclass: one per field, typed as the field."""

import argparse
from dataclasses import dataclass, field

import pytest

from contract.flags import add_dataclass_flags, parse_bool


@dataclass(frozen=True)
class Toy:
    steps: int = 10
    lr: float = 1e-3
    name: str = "run"
    shape: tuple[int, ...] = (64, 16)
    families: tuple[str, ...] = ("darts", "resnet")
    compile: bool = True
    verbose: bool = field(default=False, metadata={"help": "say more"})


def _parse(*argv, unset=False):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_dataclass_flags(parser, Toy, unset=unset)
    return parser.parse_args(list(argv))


def test_defaults_are_the_fields_and_values_take_the_fields_types():
    assert vars(_parse()) == {"steps": 10, "lr": 1e-3, "name": "run", "shape": (64, 16),
                              "families": ("darts", "resnet"), "compile": True,
                              "verbose": False}
    args = _parse("--steps", "3", "--lr", "0.1", "--shape", "8, 4", "--families", "convnext,")
    assert (args.steps, args.lr, args.shape, args.families) == (3, 0.1, (8, 4), ("convnext",))


@pytest.mark.parametrize("argv, expected", [
    (["--compile", "False"], False),  # bool("False") would be True
    (["--compile", "false"], False),
    (["--no-compile"], False),
    (["--compile"], True),
    (["--compile", "true"], True),
    ([], True),
])
def test_bool_fields_parse_false_as_false(argv, expected):
    assert _parse(*argv).compile is expected


def test_a_bool_flag_refuses_what_is_not_a_truth_value():
    with pytest.raises(argparse.ArgumentError, match="expected true or false, got 'maybe'"):
        _parse("--compile", "maybe")
    with pytest.raises(SystemExit):  # unrecognized arguments: true
        _parse("--no-compile", "true")
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        parse_bool("2")


def test_unset_flags_default_to_none_so_presets_can_fill_them():
    args = _parse("--verbose", unset=True)
    assert args.verbose is True and args.steps is None and args.compile is None


def test_help_names_each_default():
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Toy, unset=True, default_label="smoke default")
    text = " ".join(parser.format_help().split())
    assert "say more (smoke default: False)" in text and "smoke default: 64,16" in text
