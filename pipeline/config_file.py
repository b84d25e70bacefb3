"""Read run settings from a TOML file; the command line overrides what it sets."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import InputError

PATH_SETTINGS = frozenset({"inputs", "out", "store", "prompts"})

# What a setting must hold, as its command-line option takes it.
Kind = Literal["string", "list of strings", "string or list of strings", "whole number", "number", "boolean"]


def option_kinds(actions: Iterable[argparse.Action]) -> dict[str, Kind]:
    """The kind of value each of the parser's options takes, by its settings name."""
    kinds: dict[str, Kind] = {}
    for action in actions:
        convert = getattr(action.type, "__name__", "")
        if action.nargs == "*":
            kinds[action.dest] = "list of strings"
        elif action.nargs == 0:  # a flag
            kinds[action.dest] = "boolean"
        elif type(action) is not argparse._StoreAction:  # an option given once or several times
            kinds[action.dest] = "string or list of strings"
        else:
            kinds[action.dest] = "whole number" if convert == "int" else "number" if convert == "float" else "string"
    return kinds


def load_settings(path: Path, known: Mapping[str, Kind]) -> dict[str, Any]:
    """Return the file's settings keyed like the CLI's options (dashes become underscores).

    Each value must be of the kind its option takes: a string where a list is expected
    would be read a character at a time. Relative paths are taken from the file's
    folder, so a scheduled job finds its inputs wherever it is started from.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {path} is not valid TOML: {exc}") from exc
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise InputError(f"unknown setting {key!r} in {path}")
        if not _fits(value, known[name]):
            raise InputError(f"config {path}: key {key!r} must be {_a(known[name])}, got {_a(_kind_of(value))}")
        if name in PATH_SETTINGS:
            value = [_relative(path, v) for v in value] if isinstance(value, list) else _relative(path, value)
        elif name == "instructions" and isinstance(value, str) and value.startswith("@"):
            value = "@" + _relative(path, value[1:])  # a file of instructions, beside the config file
        settings[name] = value
    return settings


def _fits(value: Any, kind: Kind) -> bool:
    strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return {
        "string": isinstance(value, str),
        "list of strings": strings,
        "string or list of strings": isinstance(value, str) or strings,
        "whole number": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[kind]


def _kind_of(value: Any) -> str:
    """What a TOML value is, in a user's words."""
    if isinstance(value, list):
        odd = next((v for v in value if not isinstance(v, str)), None)
        return "list" if odd is None else f"list holding {_a(_kind_of(odd))}"
    return {bool: "boolean", int: "whole number", float: "number", str: "string",
            dict: "table"}.get(type(value), "date or time")


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _relative(config: Path, value: Any) -> str:
    candidate = Path(str(value)).expanduser()
    return str(candidate if candidate.is_absolute() else config.parent / candidate)
