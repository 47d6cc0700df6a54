"""Agent name -> loader import path, and loading with the missing / required / refused rules.

Each D-agent module exposes `load(directory: Path, name: str) -> Agent`; the teams expose
`load(directory: Path) -> StrategicTeam / TacticalTeam`. Loaders are found by import path so this
module imports none of them (and a missing one is an ordinary, reported condition):
- module not importable, or its checkpoint missing -> the agent is disabled with a warning, or the
  start is refused (exit 2) when config lists it in `required`;
- a checkpoint that exists but is unusable (layout version, agent kind, corrupt) -> refused
  (exit 2) whether required or not: trading without it silently would hide a wrong build.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from himari.decision.checkpoint import DEFAULT_DIR, CheckpointError, CheckpointMissing

log = structlog.get_logger("himari.decision")

# The D-agents of spec decision.md section 1 (D2, D3, D5, D6), in voting order.
AGENTS: dict[str, str] = {
    "cgdt": "himari.decision.nets.cgdt:load",
    "cql": "himari.decision.nets.cql:load",
    "ppo_lstm": "himari.decision.nets.ppo_lstm:load",
    "sac": "himari.decision.nets.sac:load",
}
# The MARL teams; they vote as "tactical" / "strategic" (the strategic team also sets the regime).
TEAMS: dict[str, str] = {
    "strategic": "himari.decision.nets.strategic:load",
    "tactical": "himari.decision.nets.tactical:load",
}
ALL_VOTERS = tuple(AGENTS) + tuple(TEAMS)


class RegistryError(Exception):
    """A configured agent that must not be skipped (required, or an unusable checkpoint)."""

    def __init__(self, name: str, message: str, reason: str = "checkpoint") -> None:
        self.name = name
        self.reason = reason  # "unknown" | "required" | "checkpoint"
        super().__init__(message)


def resolve(path: str) -> Callable[..., Any]:
    """`"pkg.mod:attr"` -> the callable; ImportError / AttributeError propagate."""
    mod_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod_name), attr or "load")


def checkpoint_dir(configured: str) -> Path:
    return Path(configured).expanduser() if configured else DEFAULT_DIR


def load_all(names: Iterable[str], directory: Path, required: Iterable[str] = (),
             *, loaders: dict[str, str] | None = None,
             extra: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Load every agent / team in `names` (plus `extra`, loaded for their side jobs only, such as
    the strategic team's regime) -> (loaded by name, disabled name -> reason)."""
    table = {**AGENTS, **TEAMS, **(loaders or {})}
    required = set(required)
    loaded: dict[str, Any] = {}
    disabled: dict[str, str] = {}
    for name in dict.fromkeys([*names, *extra]):
        path = table.get(name)
        if path is None:
            raise RegistryError(name, f"unknown agent {name!r}: registered are "
                                      f"{', '.join(sorted(table))}", "unknown")
        try:
            fn = resolve(path)
        except (ImportError, AttributeError) as exc:
            reason = f"loader {path} not available ({exc})"
            _missing(name, reason, required, disabled)
            continue
        try:
            loaded[name] = fn(directory) if name in TEAMS else fn(directory, name)
        except CheckpointMissing as exc:
            _missing(name, str(exc), required, disabled)
        except CheckpointError as exc:
            raise RegistryError(name, f"agent {name!r}: {exc}") from None
        except (OSError, ValueError, KeyError) as exc:
            raise RegistryError(name, f"agent {name!r} could not be loaded from {directory}: "
                                      f"{type(exc).__name__}: {exc}") from None
    return loaded, disabled


def _missing(name: str, reason: str, required: set[str], disabled: dict[str, str]) -> None:
    if name in required:
        raise RegistryError(name, f"required agent {name!r} is unavailable: {reason}", "required")
    disabled[name] = reason
    log.warning("agent_disabled", agent=name, reason=reason)


def available_agents(directory: Path | None = None) -> list[str]:
    """The voters (D-agents, then the teams) that load from `directory` (default: the shipped
    checkpoints), in voting order; a missing one is left out with a warning, an unusable
    checkpoint raises RegistryError."""
    loaded, _ = load_all(ALL_VOTERS, directory if directory is not None else DEFAULT_DIR)
    return [name for name in ALL_VOTERS if name in loaded]
