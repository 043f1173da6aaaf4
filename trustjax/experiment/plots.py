"""PNG plots with matplotlib's Agg backend (imported lazily)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence


def _pyplot():
  import matplotlib
  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt
  return plt


def line_plot(path: str, xs: Sequence[float],
              ys: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
              title: str = "", logx: bool = False, logy: bool = False,
              markers: bool = True) -> str:
  """One line per entry of `ys` against `xs`; returns `path`."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
  for name, y in ys.items():
    ax.plot(xs[:len(y)], y, marker="o" if markers else None, ms=3,
            label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  ax.grid(True, alpha=0.3)
  if len(ys) > 1:
    ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path
