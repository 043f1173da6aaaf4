"""metrics.jsonl + TensorBoard scalars, truncated on resume for exactness."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

METRICS_FILE = "metrics.jsonl"


def _scalar(v: Any) -> Any:
  if hasattr(v, "item"):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
  return v


def read_metrics(workdir: str) -> list[dict]:
  """All rows of `workdir/metrics.jsonl` (empty list when absent)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Appends one JSON object per `write(step, metrics)`.

  NaN is written as null and +-inf as +-1e308 (JSON has neither). With
  `resume_step`, rows with step > resume_step (logged after the checkpoint the
  run resumes from) are dropped first, so a killed-and-resumed run ends with
  the same file as an uninterrupted one. TensorBoard scalars go through
  tensorboardX (no TensorFlow needed) under `workdir/tensorboard`.
  """

  def __init__(self, workdir: str, *, resume_step: int | None = None,
               tensorboard: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    if resume_step is not None and os.path.exists(self.path):
      rows = read_metrics(workdir)
      with open(self.path, "w") as f:
        for r in rows:
          if r.get("step", 0) <= resume_step:
            f.write(json.dumps(r) + "\n")
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=resume_step)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
