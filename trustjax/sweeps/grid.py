"""Search spaces of a sweep: grid (product), zip and random points.

A sweep varies fields of one base job config. Fields are dotted paths into
that config (`"optimizer.learning_rate"`, `"dp.l2_clip"`); in a sweep config
file they are written nested, mirroring the job config, because ConfigDict
keys cannot hold dots:

  grid = {"seed": (0, 1), "optimizer": {"learning_rate": (0.01, 0.1)}}

A leaf of the nested mapping is the field's list of values (grid, zip) or
its distribution (random). `flatten_space` turns the nested form into
`{"optimizer.learning_rate": (0.01, 0.1), "seed": (0, 1)}`.

Points (dicts field -> value) are, in this order:
  * `grid`: the Cartesian product of every field's values;
  * `zip`: equal-length lists varied together (row i takes value i of each);
    crossed with the grid;
  * `random`: `num_points` draws (`choice`, `uniform`, `loguniform`) from a
    `numpy.random.Generator(seed)`; crossed with the grid x zip points.
Expansion is deterministic: the same space gives the same points, in the
same order, with the same `point_id`s, so a rerun finds the points it has
already run (Bergstra & Bengio 2012 for why random beats grid search when
few fields matter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

DISTRIBUTIONS = ("choice", "uniform", "loguniform")


@dataclasses.dataclass(frozen=True)
class SweepPoint:
  """One point of a sweep: its stable id and the field overrides it sets."""
  point_id: str
  overrides: dict[str, Any]


def _is_mapping(x: Any) -> bool:
  return isinstance(x, Mapping) or (hasattr(x, "items") and
                                    hasattr(x, "keys") and
                                    not isinstance(x, (str, bytes)))


def flatten_space(space: Mapping[str, Any] | None, prefix: str = ""
                  ) -> dict[str, Any]:
  """Nested mapping (a dict or ConfigDict) -> {dotted field: leaf}.

  A leaf is the first value that is not a mapping. Keys are sorted so the
  result does not depend on insertion order (ConfigDicts and JSON round
  trips may reorder keys).
  """
  if space is None:
    return {}
  out = {}
  for key in sorted(space.keys()):
    value = space[key]
    name = f"{prefix}.{key}" if prefix else str(key)
    if _is_mapping(value):
      inner = flatten_space(value, name)
      if not inner:
        raise ValueError(f"sweep field {name!r} is an empty mapping: give "
                         "it a list of values (or remove it)")
      out.update(inner)
    else:
      out[name] = value
  return out


def _values(kind: str, field: str, values: Any) -> list:
  if isinstance(values, (str, bytes)) or not isinstance(values,
                                                         Sequence):
    raise ValueError(f"{kind} field {field!r} = {values!r} is invalid: it "
                     "must be a list or tuple of values")
  if not values:
    raise ValueError(f"{kind} field {field!r} has no values: an empty list "
                     "gives an empty sweep")
  return list(values)


def expand_grid(grid: Mapping[str, Sequence] | None = None,
                zip_: Mapping[str, Sequence] | None = None
                ) -> list[dict[str, Any]]:
  """Cartesian product of `grid` crossed with the rows of `zip_`.

  Args:
    grid: flat {field: values}; every combination is a point (first field
      varies slowest, fields in sorted order).
    zip_: flat {field: values}, all lists of one length L; row i sets every
      field to its i-th value.

  Returns:
    List of {field: value} dicts (one per point); `[{}]` when both are
    empty (the base config alone).

  Raises:
    ValueError: a field with no values or not given a list, zip lists of
      different lengths, or a field both in `grid` and `zip_`.
  """
  grid = dict(grid or {})
  zip_ = dict(zip_ or {})
  both = sorted(set(grid) & set(zip_))
  if both:
    raise ValueError(f"fields {both} are in both grid and zip; put each "
                     "field in one of them")
  axes = [[(f, v) for v in _values("grid", f, grid[f])] for f in grid]
  zipped = {f: _values("zip", f, v) for f, v in zip_.items()}
  lengths = {f: len(v) for f, v in zipped.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"zip lists must all have the same length; got "
                     f"lengths {lengths}")
  if zipped:
    n = next(iter(lengths.values()))
    axes.append([tuple((f, zipped[f][i]) for f in zipped) for i in range(n)])
  points = []
  for combo in itertools.product(*axes):
    point = {}
    for item in combo:
      if item and isinstance(item[0], tuple):  # a zip row
        point.update(dict(item))
      elif item:
        point[item[0]] = item[1]
    points.append(point)
  return points


def _check_distribution(field: str, spec: Any) -> tuple:
  if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or \
      not spec or spec[0] not in DISTRIBUTIONS:
    raise ValueError(
        f"random field {field!r} = {spec!r} is invalid: use "
        "('choice', [v1, v2, ...]), ('uniform', low, high) or "
        "('loguniform', low, high)")
  kind = spec[0]
  if kind == "choice":
    if len(spec) != 2:
      raise ValueError(f"random field {field!r}: ('choice', values) takes "
                       f"one list of values, got {spec!r}")
    return (kind, _values("random choice", field, spec[1]))
  if len(spec) != 3:
    raise ValueError(f"random field {field!r}: ({kind!r}, low, high) takes "
                     f"two bounds, got {spec!r}")
  low, high = float(spec[1]), float(spec[2])
  if not (math.isfinite(low) and math.isfinite(high) and low <= high):
    raise ValueError(f"random field {field!r}: bounds ({low}, {high}) must "
                     "be finite with low <= high")
  if kind == "loguniform" and low <= 0:
    raise ValueError(f"random field {field!r}: loguniform needs low > 0, "
                     f"got {low}")
  return (kind, low, high)


def sample_random(distributions: Mapping[str, Any], num_points: int,
                  seed: int) -> list[dict[str, Any]]:
  """`num_points` independent draws of every field's distribution.

  Distributions: `('choice', values)` (uniform over the list),
  `('uniform', low, high)`, `('loguniform', low, high)` (log of the value
  uniform on [log low, log high]). Floats are returned as Python floats,
  choices as the listed values. Draw i depends only on (seed, i), so adding
  points keeps the first ones.
  """
  if num_points <= 0:
    raise ValueError(f"random.num_points={num_points!r} is invalid: it must "
                     "be >= 1 when random distributions are given")
  if not distributions:
    raise ValueError("random.num_points > 0 but random.distributions is "
                     "empty: give at least one field a distribution")
  specs = {f: _check_distribution(f, s) for f, s in distributions.items()}
  points = []
  for i in range(num_points):
    rng = np.random.default_rng([int(seed), i])
    point = {}
    for field in sorted(specs):
      kind, *args = specs[field]
      if kind == "choice":
        point[field] = args[0][int(rng.integers(len(args[0])))]
      elif kind == "uniform":
        point[field] = float(rng.uniform(args[0], args[1]))
      else:
        point[field] = float(np.exp(rng.uniform(math.log(args[0]),
                                                math.log(args[1]))))
    points.append(point)
  return points


def _short(value: Any) -> str:
  if isinstance(value, float):
    text = f"{value:.4g}"
  else:
    text = str(value)
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def point_id(overrides: Mapping[str, Any], max_readable: int = 64) -> str:
  """Stable, readable, filesystem-safe id of a point's overrides.

  `"learning_rate=0.01,seed=1-3fa2c81d"`: the last component of each field
  with its (shortened) value, then 8 hex digits of the SHA-256 of the exact
  overrides as sorted JSON, so two points differing only beyond the shown
  precision still get different ids. The base config alone is `"base"`.
  """
  if not overrides:
    return "base"
  readable = ",".join(f"{_short(f.rsplit('.', 1)[-1])}={_short(v)}"
                      for f, v in sorted(overrides.items()))
  readable = readable[:max_readable].rstrip(",")
  blob = json.dumps({k: overrides[k] for k in sorted(overrides)},
                    sort_keys=True, default=repr).encode()
  return f"{readable}-{hashlib.sha256(blob).hexdigest()[:8]}"


def expand_space(grid: Mapping[str, Any] | None = None,
                 zip_: Mapping[str, Any] | None = None,
                 random: Mapping[str, Any] | None = None
                 ) -> list[SweepPoint]:
  """All points of a sweep's search space, with their ids.

  Args:
    grid, zip_: nested or flat mappings field -> values (see module doc).
    random: None, or a mapping with `num_points` (0: no random search),
      `seed` and `distributions` (nested or flat field -> spec).

  Returns:
    `SweepPoint`s in a deterministic order.

  Raises:
    ValueError: an empty search space (no points), a bad list or
      distribution, zip lists of different lengths, a field given twice,
      or two grid/zip points with the same overrides (a value listed
      twice). Repeated random draws (possible with `choice`) are dropped,
      keeping the first.
  """
  grid_f, zip_f = flatten_space(grid), flatten_space(zip_)
  points = expand_grid(grid_f, zip_f)
  rand = random or {}
  num = int(rand.get("num_points", 0) or 0)
  dists = flatten_space(rand.get("distributions")) if rand else {}
  if num or dists:
    twice = sorted(set(dists) & (set(grid_f) | set(zip_f)))
    if twice:
      raise ValueError(f"fields {twice} are both random and in grid/zip; "
                       "give each field one way of varying")
    draws = sample_random(dists, num, int(rand.get("seed", 0) or 0))
    # Choices can repeat a draw: keep its first occurrence only.
    unique = {point_id(d): d for d in reversed(draws)}
    draws = [d for d in draws if unique.get(point_id(d)) is d]
    points = [{**p, **d} for p in points for d in draws]
  if points == [{}]:
    raise ValueError("the sweep is empty: grid, zip and random define no "
                     "field to vary; give at least one field a list of "
                     "values")
  out, seen = [], {}
  for p in points:
    pid = point_id(p)
    if pid in seen:
      raise ValueError(f"two sweep points have the same overrides {p}: "
                       "remove the duplicate value")
    seen[pid] = p
    out.append(SweepPoint(pid, p))
  return out
