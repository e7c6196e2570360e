"""Command-line flags generated from a dataclass: one flag per field, so that a configuration
class and its command line cannot drift apart.

Standard library only, so that a command line can answer ``--help`` and refuse a mistyped flag
before it imports torch or Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also yes/no, 1/0, on/off, any case); anything else is an error,
    never silently true as ``bool("False")`` would be."""
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, *, unset: bool = False,
                        default_label: str = "default") -> None:
    """Add ``--field-name`` for every field of the dataclass ``cls``.

    A field's ``metadata["help"]`` is its help text, followed by its default. Tuple fields take
    comma-separated values of their element type. A bool field is ``--flag`` (true),
    ``--flag true|false`` (for scripts that pass a value) or ``--no-flag`` (false). With
    ``unset``, every flag defaults to None, so that the caller can tell a flag given on the
    command line from one left out (and fill the rest from presets or files); the help then
    still names the field's own default, as ``default_label``.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        text = field.metadata.get("help", "").replace("%", "%%")
        default = None if unset else field.default
        shown = (",".join(map(str, field.default)) if isinstance(field.default, tuple)
                 else field.default)
        described = f"{text} ({default_label}: {shown})" if text else f"{default_label}: {shown}"
        if hint is bool:
            parser.add_argument(flag, type=parse_bool, nargs="?", const=True, default=default,
                                metavar="true|false", help=described)
            parser.add_argument("--no-" + flag[2:], dest=field.name, action="store_false",
                                help=f"same as {flag} false")
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, type=_tuple_of(typing.get_args(hint)[0]), default=default,
                                help=described)
        else:
            parser.add_argument(flag, type=hint, default=default, help=described)


def _tuple_of(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())

    return parse
