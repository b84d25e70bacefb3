"""Read run settings from a TOML file; the command line overrides what it sets."""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

PATH_SETTINGS = frozenset({"inputs", "out", "store", "prompts"})


def load_settings(path: Path, known: Collection[str]) -> dict[str, Any]:
    """Return the file's settings keyed like the CLI's options (dashes become underscores).

    Relative paths are taken from the file's folder, so a scheduled job finds its inputs
    wherever it is started from.
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
        if name in PATH_SETTINGS:
            value = [_relative(path, v) for v in value] if isinstance(value, list) else _relative(path, value)
        elif name == "instructions" and isinstance(value, str) and value.startswith("@"):
            value = "@" + _relative(path, value[1:])  # a file of instructions, beside the config file
        settings[name] = value
    return settings


def _relative(config: Path, value: Any) -> str:
    candidate = Path(str(value)).expanduser()
    return str(candidate if candidate.is_absolute() else config.parent / candidate)
