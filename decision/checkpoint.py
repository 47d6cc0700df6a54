"""Checkpoints: weights as safetensors, metadata as JSON beside them. Never pickle.

A checkpoint named `<dir>/<name>` is two files:
- `<name>.safetensors`: float32/float64/int arrays by name (read with `safetensors.numpy`, so loading
  for inference never imports torch);
- `<name>.json`: metadata, at least `{"agent": <kind>, "layout_version": LAYOUT_VERSION,
  "seed": int, "data": {...}, "metrics": {...}}`, plus whatever the agent needs to rebuild itself
  (sizes, feature statistics are stored as arrays in the weights file).

`load_checkpoint` refuses a missing file, a layout version other than this build's, or another
agent kind, with `CheckpointError` naming the file and the values; the command line turns that
into exit 2 (a restart cannot fix it: the model must be retrained or the right file given).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from himari.decision.layout import LAYOUT_VERSION

DEFAULT_DIR = Path(__file__).with_name("checkpoints")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, another layout or another agent."""


class CheckpointMissing(CheckpointError):
    """No checkpoint at that path (the agent is disabled, or refused when required)."""


def checkpoint_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.safetensors", directory / f"{name}.json"


def save_checkpoint(directory: Path, name: str, tensors: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically; `meta` gets `layout_version` if it lacks one."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights, meta_path = checkpoint_paths(directory, name)
    meta = {"layout_version": LAYOUT_VERSION, **meta}
    if "agent" not in meta:
        raise ValueError("checkpoint metadata needs an 'agent' kind")
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    tmp_w = weights.with_name(weights.name + ".tmp")
    tmp_m = meta_path.with_name(meta_path.name + ".tmp")
    save_file(arrays, str(tmp_w), metadata={"agent": str(meta["agent"]),
                                            "layout_version": str(meta["layout_version"])})
    tmp_m.write_text(json.dumps(meta, indent=1, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp_w, weights)
    os.replace(tmp_m, meta_path)
    return weights


def load_checkpoint(directory: Path, name: str, agent: str) -> tuple[dict[str, np.ndarray],
                                                                     dict[str, Any]]:
    """Weights (numpy) and metadata of checkpoint `name`, checked for layout and agent kind."""
    from safetensors.numpy import load_file

    weights, meta_path = checkpoint_paths(directory, name)
    if not weights.exists() or not meta_path.exists():
        raise CheckpointMissing(f"checkpoint {name!r} not found: expected {weights} and {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint metadata {meta_path} is unreadable: {exc}") from None
    version = meta.get("layout_version")
    if version != LAYOUT_VERSION:
        raise CheckpointError(
            f"checkpoint {meta_path} has layout_version={version!r}, but this build reads "
            f"{LAYOUT_VERSION!r}: retrain it with `himari train` (the feature columns differ)")
    if meta.get("agent") != agent:
        raise CheckpointError(f"checkpoint {meta_path} is for agent {meta.get('agent')!r}, "
                              f"not {agent!r}")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - any decode failure is the same user-facing error
        raise CheckpointError(f"checkpoint weights {weights} are unreadable: {exc}") from None
    return tensors, meta


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
