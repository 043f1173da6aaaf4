"""PNG plots rendered with matplotlib's Agg canvas.

matplotlib is imported inside the functions and `pyplot` is never used, so
importing trustjax neither loads matplotlib nor changes its global backend
or figure state (safe in notebooks, threads and headless CI).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

_MARKERS = "os^Dv<>pP*Xh"


def _figure():
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4), dpi=110)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot(1, 1, 1)


def _series_x(xs, name: str, n: int) -> Sequence[float]:
  x = xs[name] if isinstance(xs, Mapping) else xs
  if len(x) != n:
    raise ValueError(f"series {name!r} has {n} y values but {len(x)} x "
                     "values")
  return x


def _finish(fig, ax, path: str, *, xlabel: str, ylabel: str, title: str,
            logx: bool, logy: bool, legend: bool) -> str:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  ax.grid(True, alpha=0.3)
  if legend:
    ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  return path


def line_plot(path: str, xs: Sequence[float] | Mapping[str, Sequence[float]],
              ys: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
              title: str = "", logx: bool = False, logy: bool = False,
              markers: bool = True) -> str:
  """Writes a PNG with one line per entry of `ys`; returns `path`.

  Args:
    path: output file (parent directories are created).
    xs: x values shared by all series, or a mapping name -> x values.
    ys: mapping series name (legend label) -> y values, same length as its
      x values (else ValueError). NaN values leave gaps.
    logx, logy: log-scaled axes. markers: mark each point.
  """
  if not ys:
    raise ValueError("ys is empty: nothing to plot")
  fig, ax = _figure()
  for i, (name, y) in enumerate(ys.items()):
    ax.plot(_series_x(xs, name, len(y)), y, label=name, ms=3,
            marker=_MARKERS[i % len(_MARKERS)] if markers else None)
  return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title,
                 logx=logx, logy=logy, legend=len(ys) > 1)


def scatter_plot(path: str,
                 xs: Sequence[float] | Mapping[str, Sequence[float]],
                 ys: Mapping[str, Sequence[float]], *, xlabel: str,
                 ylabel: str, title: str = "", logx: bool = False,
                 logy: bool = False, diagonal: bool = False) -> str:
  """Writes a PNG scatter plot, one colour per entry of `ys`; returns `path`.

  Same arguments as `line_plot`; `diagonal=True` adds the y = x line
  (e.g. for ROC curves or calibration plots).
  """
  if not ys:
    raise ValueError("ys is empty: nothing to plot")
  fig, ax = _figure()
  for i, (name, y) in enumerate(ys.items()):
    ax.scatter(_series_x(xs, name, len(y)), y, label=name, s=12,
               marker=_MARKERS[i % len(_MARKERS)], alpha=0.8)
  if diagonal:
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
  return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title,
                 logx=logx, logy=logy, legend=len(ys) > 1)
