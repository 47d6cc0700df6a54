"""Shared pieces for config sections.

Each stage owns its config section as a frozen msgspec Struct with defaults (the embedded default
config is the Structs' defaults). msgspec rejects unknown keys and wrong types at decode time; range
checks live in each Struct's `__post_init__` and raise `ConfigError` naming the key, the value and
what is allowed. `daemon/config.py` composes the sections and prefixes keys with their table path.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Bad configuration: names the key, the offending value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, *, value_text: str | None = None) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        shown = value_text if value_text is not None else repr(value)
        super().__init__(f"config key '{key}' = {shown} is not allowed: {allowed}")



def check_range(key: str, value: float | int, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi (or strict where *_open)."""
    bad = False
    if lo is not None and (value <= lo if lo_open else value < lo):
        bad = True
    if hi is not None and (value >= hi if hi_open else value > hi):
        bad = True
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else repr(lo)
        hi_s = "+inf" if hi is None else repr(hi)
        raise ConfigError(key, value, f"a number in {left}{lo_s}, {hi_s}{right}")


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, value, f"one of {', '.join(repr(c) for c in choices)}")
