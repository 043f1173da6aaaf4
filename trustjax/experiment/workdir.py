"""Workdir creation and the config identity check.

A workdir holds exactly one configuration, recorded in `config.json`.
Rerunning with the same config resumes; a different config is refused,
naming the keys that differ, unless the caller overwrites, which first
removes everything the old run left in the workdir (checkpoints, metrics,
TensorBoard events, plots).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

CONFIG_FILE = "config.json"


def _to_json(obj: Any) -> Any:
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _to_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_json(v) for v in obj]
  if isinstance(obj, (set, frozenset)):
    return sorted((_to_json(v) for v in obj), key=repr)
  if isinstance(obj, np.ndarray) or (hasattr(obj, "shape") and
                                     hasattr(obj, "dtype")):
    arr = np.asarray(obj)
    return _to_json(arr.tolist() if arr.ndim else arr.item())
  if isinstance(obj, float) and not math.isfinite(obj):
    return repr(obj)  # "nan", "inf", "-inf": NaN != NaN would break diffs
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  if hasattr(obj, "item"):  # numpy scalar types
    return _to_json(obj.item())
  return repr(obj)


def config_to_dict(config: Any) -> dict:
  """A JSON-safe plain dict of a `ConfigDict` or mapping.

  Tuples and sets become lists, numpy/jax scalars and arrays Python numbers
  and lists, non-finite floats the strings "nan"/"inf"/"-inf", anything
  else its `repr`. This is exactly what `config.json` holds.
  """
  out = _to_json(config)
  if not isinstance(out, dict):
    raise ValueError(f"config must be a ConfigDict or mapping, got "
                     f"{type(config).__name__}")
  return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict) or (not d and prefix):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def _drop(flat: dict[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
  ignore = tuple(ignore)
  return {k: v for k, v in flat.items()
          if not any(k == i or k.startswith(i + ".") for i in ignore)}


def config_hash(config: Any, *, ignore: Iterable[str] = ()) -> str:
  """Stable 16-hex-digit SHA-256 of the config's sorted-key JSON.

  Keys in `ignore` (dotted paths; a prefix drops a whole sub-dict) do not
  count. Equal hashes <=> `config_diff` is empty (up to hash collisions).
  """
  flat = _drop(_flatten(config_to_dict(config)), ignore)
  blob = json.dumps(flat, sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def config_diff(old: Any, new: Any, *, ignore: Iterable[str] = ()
                ) -> list[str]:
  """Differing dotted keys, as sorted `"key: old -> new"` strings.

  Values are compared by their JSON text, so `1` and `1.0` or `True` and `1`
  differ; a key present on one side only shows `<absent>` on the other.
  """
  a = _drop(_flatten(config_to_dict(old)), ignore)
  b = _drop(_flatten(config_to_dict(new)), ignore)
  absent = "<absent>"
  out = []
  for k in sorted(set(a) | set(b)):
    va = json.dumps(a[k], sort_keys=True) if k in a else absent
    vb = json.dumps(b[k], sort_keys=True) if k in b else absent
    if va != vb:
      out.append(f"{k}: {va} -> {vb}")
  return out


def _clear(path: Path) -> None:
  """Removes the contents of `path` (not `path` itself: it may be a link)."""
  for child in path.iterdir():
    if child.is_dir() and not child.is_symlink():
      shutil.rmtree(child)
    else:
      child.unlink()


def prepare_workdir(workdir: str | os.PathLike, config: Any, *,
                    overwrite: bool = False,
                    ignore: Iterable[str] = (), write: bool = True) -> Path:
  """Creates `workdir` holding `config.json`, or checks it holds `config`.

  - New or empty directory: created, `config.json` written.
  - Holds a `config.json` equal to `config` (keys in `ignore` aside):
    returned, so the caller resumes from its checkpoints (when only
    ignored keys changed, `config.json` is updated to the new values).
  - Holds a different `config.json`: `ValueError` listing every differing
    dotted key with old and new value and naming the fixes (`--overwrite`,
    or another `--workdir`). Nothing is touched.
  - `overwrite=True`: everything inside a workdir that holds a
    `config.json` is removed first (checkpoints, metrics, events, plots),
    whatever its config, and a fresh `config.json` is written. A non-empty
    directory without `config.json` is not a trustjax workdir and is never
    wiped: `ValueError`.

  Args:
    workdir: the run's output directory.
    config: an `ml_collections.ConfigDict` or a mapping.
    overwrite: start afresh, deleting the old run's outputs.
    ignore: dotted keys (or key prefixes) that do not define the run's
      identity, e.g. `("log_every",)`; they may change between restarts.
    write: False makes every check above (raising the same errors) and
      changes nothing. A multi-host job checks on every process and writes
      on process 0 only (`trustjax.experiment.multihost.prepare_workdir`).

  Returns:
    `Path(workdir)`.
  """
  path = Path(workdir)
  new = config_to_dict(config)
  cfg_file = path / CONFIG_FILE
  if path.exists() and not path.is_dir():
    raise ValueError(f"workdir={str(path)!r} exists and is not a directory")
  if cfg_file.exists():
    if overwrite:
      if write:
        _clear(path)
    else:
      try:
        old = json.loads(cfg_file.read_text())
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{cfg_file} is not valid JSON ({e}); pass --overwrite to "
            "replace that run (its outputs are deleted) or choose another "
            "--workdir") from e
      diff = config_diff(old, new, ignore=ignore)
      if diff:
        raise ValueError(
            f"workdir {str(path)!r} holds a run with a different config "
            f"({len(diff)} differing key(s), old -> new):\n  "
            + "\n  ".join(diff) + "\nPass --overwrite to replace that run "
            "(its checkpoints, metrics and events are deleted) or choose "
            "another --workdir.")
      if old == new:
        return path
      # Only ignored keys changed: record the current values.
  elif overwrite and path.is_dir() and any(path.iterdir()):
    raise ValueError(
        f"workdir {str(path)!r} is not empty and holds no {CONFIG_FILE}: it "
        "is not a trustjax workdir, so --overwrite will not wipe it; choose "
        "a new or empty --workdir")
  if not write:
    return path
  path.mkdir(parents=True, exist_ok=True)
  tmp = path / (CONFIG_FILE + ".tmp")
  tmp.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, cfg_file)  # atomic: a kill never leaves half a config
  return path


def load_config(path: str | os.PathLike, variant: str | None = None,
                overrides: Mapping[str, Any] | None = None):
  """`get_config(variant)` of a config file, with dotted-key overrides.

  What `--config=path:variant --config.a.b=v` does on the command line, for
  tests, benchmarks and notebooks. An override of a key the config does not
  have raises KeyError naming it.
  """
  import importlib.util
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  for key, value in (overrides or {}).items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"config {path} has no field {key!r}")
    node[leaf] = value
  return config
