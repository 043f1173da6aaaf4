"""Workdir creation and the config identity check.

A workdir holds exactly one configuration. Rerunning with the same config
resumes; a different config is refused (naming the keys that differ) unless
the caller asks to overwrite, which first removes the old outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

CONFIG_FILE = "config.json"


def _to_json(obj: Any) -> Any:
  if hasattr(obj, "to_dict"):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _to_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_json(v) for v in obj]
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  if hasattr(obj, "item"):          # numpy / jax scalars
    return obj.item()
  return repr(obj)


def config_to_dict(config: Any) -> dict:
  """A JSON-safe plain dict of a ConfigDict or mapping."""
  return json.loads(json.dumps(_to_json(config)))


def config_hash(config: Any) -> str:
  """Stable short hash of a config (sorted-key JSON)."""
  blob = json.dumps(config_to_dict(config), sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
  return out


def config_diff(old: Mapping, new: Mapping) -> list[str]:
  """Dotted keys whose values differ, as 'key: old -> new' strings."""
  a, b = _flatten(dict(old)), _flatten(dict(new))
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b)) if a.get(k, object()) != b.get(
              k, object())]


def prepare_workdir(workdir: str | os.PathLike, config: Any, *,
                    overwrite: bool = False) -> Path:
  """Creates `workdir` with config.json, or checks it holds the same config.

  Raises:
    ValueError: the workdir holds a different config and overwrite is False.
      Nothing in it is touched.
  """
  path = Path(workdir)
  new = config_to_dict(config)
  cfg_file = path / CONFIG_FILE
  if cfg_file.exists():
    try:
      old = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{cfg_file} is not valid JSON ({e}); pass "
                       "--overwrite or use another workdir") from e
    diff = config_diff(old, new)
    if diff and not overwrite:
      raise ValueError(
          f"workdir {path} holds a run with a different config; differing "
          "keys:\n  " + "\n  ".join(diff) + "\nPass --overwrite to replace "
          "that run (its checkpoints and metrics are deleted) or choose "
          "another --workdir.")
    if diff and overwrite:
      shutil.rmtree(path)
  elif overwrite and path.exists():
    shutil.rmtree(path)
  path.mkdir(parents=True, exist_ok=True)
  if not cfg_file.exists():
    cfg_file.write_text(json.dumps(new, indent=2, sort_keys=True))
  return path
