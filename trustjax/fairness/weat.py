"""Word Embedding Association Test (Caliskan, Bryson & Narayanan, Science 2017).

For target sets X, Y and attribute sets A, B of embeddings (rows):

  s(w, A, B)    = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)
  S(X, Y, A, B) = sum_{x in X} s(x, A, B) - sum_{y in Y} s(y, A, B)
  effect size d = (mean_{x} s(x,A,B) - mean_{y} s(y,A,B))
                  / std_{w in X u Y} s(w, A, B)          (sample std, ddof=1)

d > 0: X is closer to A (and Y to B) than the other way round. The one-sided
permutation p-value is P_i[S(X_i, Y_i, A, B) >= S(X, Y, A, B)] over the
equal-size re-partitions (X_i, Y_i) of X u Y.

The arithmetic is jnp and jittable (`cosine_matrix`, `association`,
`weat_statistic`, `weat_effect_size`); the permutation test draws its
partitions with a jax key (or enumerates them all when few).

Word lists: `load_weat_tests()` reads `weat/weat_tests.json` (WEAT 1-10 and
CEAT's intersectional tests, from github.com/weiguowilliam/CEAT).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

WEAT_FILE = os.path.join("weat", "weat_tests.json")


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_matrix(u: jax.Array, v: jax.Array) -> jax.Array:
  """cos(u_i, v_j): u[..., n, D], v[..., m, D] -> [..., n, m]."""
  return jnp.einsum("...nd,...md->...nm", _unit(u), _unit(v))


def association(w: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """s(w, A, B) for each row of w: w[..., n, D], a[..., na, D], b[..., nb, D]
  -> [..., n]."""
  return (cosine_matrix(w, a).mean(-1) - cosine_matrix(w, b).mean(-1))


def _effect_from_assoc(sx: jax.Array, sy: jax.Array) -> jax.Array:
  s = jnp.concatenate([sx, sy], -1)
  return (sx.mean(-1) - sy.mean(-1)) / jnp.std(s, axis=-1, ddof=1)


def weat_statistic(x, y, a, b) -> jax.Array:
  """S(X, Y, A, B) = sum_x s(x, A, B) - sum_y s(y, A, B); batched over
  leading axes."""
  return association(x, a, b).sum(-1) - association(y, a, b).sum(-1)


def weat_effect_size(x, y, a, b) -> jax.Array:
  """Caliskan et al.'s effect size d (sample std, ddof=1, over X u Y)."""
  return _effect_from_assoc(association(x, a, b), association(y, a, b))


def _check_sets(**sets) -> None:
  dims = set()
  for name, s in sets.items():
    if s.ndim != 2 or s.shape[0] < 1:
      raise ValueError(f"{name} must be a non-empty [n, D] array of "
                       f"embeddings; got shape {s.shape}")
    dims.add(s.shape[1])
  if len(dims) != 1:
    raise ValueError(f"embedding sizes differ across sets: "
                     f"{ {k: v.shape for k, v in sets.items()} }")
  if sets["X"].shape[0] + sets["Y"].shape[0] < 3:
    raise ValueError("X and Y together need at least 3 words for a sample "
                     "standard deviation and a permutation test")


def weat_p_value(s_xy: np.ndarray, num_x: int, *,
                 num_permutations: int = 10000, seed: int = 0,
                 exact_limit: int = 100000) -> float:
  """One-sided permutation p-value from the associations s(w, A, B).

  Args:
    s_xy: associations of X then Y, [num_x + num_y].
    num_x: |X|.
    num_permutations: random partitions when there are more than
      `exact_limit` of them; p = (1 + #{S_i >= S}) / (1 + num_permutations).
    exact_limit: enumerate all C(|X u Y|, |X|) partitions when at most this
      many; p = #{S_i >= S} / C (the observed partition is one of them).
  """
  s = np.asarray(s_xy, np.float64)
  n = len(s)
  observed = s[:num_x].sum() - s[num_x:].sum()
  total = s.sum()
  tol = 1e-9 * max(1.0, abs(observed))
  if math.comb(n, num_x) <= exact_limit:
    stats = np.array([2 * s[list(c)].sum() - total
                      for c in itertools.combinations(range(n), num_x)])
    return float(np.mean(stats >= observed - tol))
  keys = jax.random.split(jax.random.key(seed), int(num_permutations))
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
  sx = jnp.asarray(s, jnp.float32)[perms[:, :num_x]].sum(-1)
  stats = np.asarray(2 * sx, np.float64) - total
  return float((1 + np.sum(stats >= observed - max(tol, 1e-6))) /
               (1 + int(num_permutations)))


@dataclasses.dataclass(frozen=True)
class WeatResult:
  effect_size: float
  statistic: float
  p_value: float


def weat(x, y, a, b, *, num_permutations: int = 10000, seed: int = 0,
         exact_limit: int = 100000) -> WeatResult:
  """WEAT on static embeddings x[nx,D], y[ny,D], a[na,D], b[nb,D].

  Returns the effect size d, the statistic S and the one-sided permutation
  p-value (see `weat_p_value`).
  """
  x, y, a, b = (jnp.asarray(v, jnp.float32) for v in (x, y, a, b))
  _check_sets(X=x, Y=y, A=a, B=b)
  sx, sy = association(x, a, b), association(y, a, b)
  d = float(_effect_from_assoc(sx, sy))
  s = np.concatenate([np.asarray(sx), np.asarray(sy)])
  return WeatResult(d, float(sx.sum() - sy.sum()),
                    weat_p_value(s, x.shape[0],
                                 num_permutations=num_permutations,
                                 seed=seed, exact_limit=exact_limit))


@dataclasses.dataclass(frozen=True)
class WeatTest:
  """Word lists of one test: targets X, Y; attributes A, B; their names."""
  name: str
  X: tuple[str, ...]
  Y: tuple[str, ...]
  A: tuple[str, ...]
  B: tuple[str, ...]
  names: tuple[str, str, str, str] = ("X", "Y", "A", "B")

  def words(self) -> list[str]:
    """All distinct words, in X, Y, A, B order."""
    return list(dict.fromkeys(self.X + self.Y + self.A + self.B))


def load_weat_tests(path: str | None = None) -> dict[str, WeatTest]:
  """Tests from `weat_tests.json` ({name: {X, Y, A, B, X_name, ...}}).

  Args:
    path: the JSON file, or a data root holding `weat/weat_tests.json`;
      None: `$TRUSTJAX_DATA_DIR/weat/weat_tests.json`.
  """
  if path is None:
    root = os.environ.get("TRUSTJAX_DATA_DIR")
    if not root:
      raise FileNotFoundError("load_weat_tests: no path given and "
                              "TRUSTJAX_DATA_DIR is not set")
    path = os.path.join(root, WEAT_FILE)
  elif os.path.isdir(path):
    path = os.path.join(path, WEAT_FILE)
  with open(path, encoding="utf-8") as f:
    raw = json.load(f)
  return {name: weat_test_from_dict(name, t) for name, t in raw.items()}


def weat_test_from_dict(name: str, t: Mapping) -> WeatTest:
  """A `WeatTest` from {"X": [...], "Y": [...], "A": [...], "B": [...]}."""
  for k in "XYAB":
    if k not in t or not t[k]:
      raise ValueError(f"test {name!r}: word list {k!r} is missing or empty")
  return WeatTest(name, *(tuple(t[k]) for k in "XYAB"),
                  names=tuple(t.get(f"{k}_name", k) for k in "XYAB"))
