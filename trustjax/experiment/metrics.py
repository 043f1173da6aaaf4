"""metrics.jsonl + TensorBoard scalars, truncated on resume for exactness.

File format: one JSON object per line, `{"step": int, name: value, ...}`,
keys in the order given to `write`. Values are JSON numbers, booleans or
strings; NaN is written as `null` and +-inf as the strings
`"Infinity"`/`"-Infinity"` (standard JSON has neither), and `read_metrics`
turns both back into floats.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_INF = {"Infinity": math.inf, "-Infinity": -math.inf}


def _scalar(name: str, v: Any) -> Any:
  if isinstance(v, (str, bool)) or v is None:
    return v
  if not isinstance(v, (int, float)):
    arr = np.asarray(v)
    if arr.size != 1:
      raise ValueError(f"metric {name!r} must be a scalar, got shape "
                       f"{arr.shape}")
    if arr.dtype == bool:
      return bool(arr.reshape(()))
    v = (int(arr.reshape(())) if np.issubdtype(arr.dtype, np.integer)
         else float(arr.reshape(()).astype(np.float64)))
  if isinstance(v, float) and not math.isfinite(v):
    return None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
  return v


def _decode(row: dict) -> dict:
  return {k: (math.nan if v is None else _INF.get(v, v) if isinstance(v, str)
              else v) for k, v in row.items()}


def _read_lines(path: str) -> list[str]:
  """Complete lines of `path`; a torn last line (killed mid-write) is cut."""
  with open(path) as f:
    text = f.read()
  lines = text.split("\n")
  complete, torn = lines[:-1], lines[-1]
  if torn.strip():
    try:
      json.loads(torn)
      complete.append(torn)  # valid row that merely lacks its newline
    except json.JSONDecodeError:
      pass
  return [l for l in complete if l.strip()]


def read_metrics(workdir: str, filename: str = METRICS_FILE) -> list[dict]:
  """All rows of `workdir/<filename>` in file order ([] when absent).

  `null` comes back as NaN and `"Infinity"`/`"-Infinity"` as +-inf.
  """
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return []
  return [_decode(r) for _, r in _parse(path)]


def _parse(path: str) -> list[tuple[str, dict]]:
  """(line, row) pairs of the complete lines of `path`."""
  rows = []
  for i, line in enumerate(_read_lines(path)):
    try:
      rows.append((line, json.loads(line)))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} line {i + 1} is not JSON ({e}); fix or "
                       "delete that line") from e
  return rows


class MetricWriter:
  """Appends one JSON line per `write(step, metrics)`, plus TensorBoard.

  Resume contract: with `resume_step=s`, lines whose step is > s (logged
  after the checkpoint the run resumes from, and so logged again by the
  resumed run) are dropped first (atomic rewrite), and TensorBoard is told
  to purge events after s; a killed-and-resumed deterministic run therefore
  ends with byte-identical `metrics.jsonl` to an uninterrupted one. With
  `resume_step=None` the run is a fresh start: an existing file and the
  TensorBoard directory are removed. Jobs that add metrics to another job's
  workdir pass their own `filename`.

  Numeric values (Python, numpy or jax scalars) also go to TensorBoard via
  tensorboardX (no TensorFlow needed) under `workdir/tensorboard`.

  Multi-host jobs: only one process writes. `active=None` (the default)
  means "this is process 0" (`jax.process_index() == 0`); an inactive
  writer touches no file and drops every row, so every process can call
  `write` unconditionally.
  """

  def __init__(self, workdir: str, *, resume_step: int | None = None,
               filename: str = METRICS_FILE, tensorboard: bool = True,
               active: bool | None = None):
    if active is None:
      import jax
      active = jax.process_index() == 0
    self.active = bool(active)
    self.path = os.path.join(workdir, filename)
    self._f = self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    if resume_step is not None:
      if os.path.exists(self.path):
        kept = [line for line, row in _parse(self.path)
                if row.get("step", 0) <= resume_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
          f.writelines(line + "\n" for line in kept)
        os.replace(tmp, self.path)
    else:
      if os.path.exists(self.path):
        os.remove(self.path)
      if tensorboard and filename == METRICS_FILE and os.path.isdir(tb_dir):
        shutil.rmtree(tb_dir)
    self._f = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(tb_dir, purge_step=resume_step)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Appends `{"step": step, **metrics}` (scalars only) and flushes."""
    if "step" in metrics:
      raise ValueError("metrics must not contain the key 'step' (it is the "
                       "`step` argument)")
    if not self.active:
      return
    row = {"step": int(step)}
    row.update({str(k): _scalar(k, v) for k, v in metrics.items()})
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in _decode(row).items():
        if k != "step" and isinstance(v, (int, float)) and \
            not isinstance(v, bool):
          self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    if self._f is None:
      return
    self._f.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._f is not None and not self._f.closed:
      self._f.close()
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
