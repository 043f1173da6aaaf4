"""Counterfactual token fairness (Garg et al., AIES 2019).

"Counterfactual Fairness in Text Classification through Robustness": for
each input x and its counterfactual x' (protected words swapped, e.g. he <->
she), the gap is the change of the model's output,

  gap(x) = | f(x) - f(x') |              (scalar scores f, e.g. P(toxic))
  gap(x) = dist(p(x), p(x'))             (class probabilities p [C])

with dist (`distance=`) one of
  "tv":   total variation, 0.5 * sum_c |p_c - p'_c|   (in [0, 1]; default)
  "l1":   sum_c |p_c - p'_c|
  "max":  max_c |p_c - p'_c|
  "flip": 1 if argmax p != argmax p' else 0          (prediction flips)
and "abs" (|f - f'|) for scalar scores. The CTF gap of a data set is the mean
gap; we report it over all inputs (`mean`) and over the inputs that the swap
actually changed (`mean_changed`, Garg et al.'s evaluation set: sentences
that contain an identity term), overall and per group (e.g. the gender of
the original text). Inputs the swap leaves unchanged have gap 0 exactly
for a deterministic model.

`counterfactual_gaps` is jnp and jittable; `counterfactual_fairness` runs a
batched `predict_fn` on the texts and their swaps (`swap_fn`, e.g.
`trustjax.fairness.counterfactual.CounterfactualSwapper().swap`, or
pre-swapped texts).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DISTANCES = ("abs", "tv", "l1", "max", "flip")


def counterfactual_gaps(scores: jax.Array, cf_scores: jax.Array, *,
                        distance: str = "tv") -> jax.Array:
  """Per-example gaps [B] between outputs on x and on its counterfactual.

  Args:
    scores, cf_scores: [B] scalar scores (distance "abs") or [B, C]
      probabilities (any other distance); same shape.
  """
  if distance not in DISTANCES:
    raise ValueError(f"distance={distance!r}; valid: {DISTANCES}")
  if scores.shape != cf_scores.shape:
    raise ValueError(f"scores {scores.shape} and cf_scores "
                     f"{cf_scores.shape} must have the same shape")
  if distance == "abs":
    if scores.ndim != 1:
      raise ValueError(f"distance='abs' needs scalar scores [B]; got shape "
                       f"{scores.shape} (use 'tv', 'l1', 'max' or 'flip')")
    return jnp.abs(scores - cf_scores)
  if scores.ndim != 2:
    raise ValueError(f"distance={distance!r} needs probabilities [B, C]; "
                     f"got shape {scores.shape} (use 'abs' for [B])")
  diff = jnp.abs(scores - cf_scores)
  if distance == "tv":
    return 0.5 * diff.sum(-1)
  if distance == "l1":
    return diff.sum(-1)
  if distance == "max":
    return diff.max(-1)
  return (jnp.argmax(scores, -1) != jnp.argmax(cf_scores, -1)).astype(
      jnp.float32)


@dataclasses.dataclass(frozen=True)
class CounterfactualResult:
  """Gaps [B], which inputs the swap changed [B], and their means.

  `per_group[g] = {"mean", "mean_changed", "count", "num_changed"}`;
  means over an empty set are NaN.
  """
  gaps: np.ndarray
  changed: np.ndarray
  mean: float
  mean_changed: float
  num_changed: int
  per_group: dict

  def as_dict(self) -> dict:
    return {"mean": self.mean, "mean_changed": self.mean_changed,
            "num_changed": self.num_changed, "count": int(len(self.gaps)),
            "per_group": self.per_group}


def _mean(x: np.ndarray) -> float:
  return float(np.mean(x)) if x.size else float("nan")


def summarize_gaps(gaps, changed=None, groups=None) -> CounterfactualResult:
  """Means overall, over changed inputs, and per group (host side).

  Args:
    gaps: [B] from `counterfactual_gaps`.
    changed: bool [B], True where x' != x (default: all True).
    groups: optional group label per input [B] (ints, bools or strings).
  """
  gaps = np.asarray(gaps, np.float64).reshape(-1)
  n = len(gaps)
  changed = (np.ones(n, bool) if changed is None
             else np.asarray(changed, bool).reshape(-1))
  if len(changed) != n:
    raise ValueError(f"changed has {len(changed)} entries; expected {n}")
  per_group = {}
  if groups is not None:
    groups = np.asarray(groups)
    if groups.shape != (n,):
      raise ValueError(f"groups has shape {groups.shape}; expected ({n},)")
    if np.issubdtype(groups.dtype, np.floating):
      raise ValueError(f"groups has float dtype {groups.dtype}; use ints, "
                       "bools or strings")
    for g in np.unique(groups).tolist():
      sel = groups == g
      per_group[str(g)] = {"mean": _mean(gaps[sel]),
                           "mean_changed": _mean(gaps[sel & changed]),
                           "count": int(sel.sum()),
                           "num_changed": int((sel & changed).sum())}
  return CounterfactualResult(gaps, changed, _mean(gaps),
                              _mean(gaps[changed]), int(changed.sum()),
                              per_group)


def counterfactual_fairness(predict_fn: Callable[[Sequence[str]], Any],
                            texts: Sequence[str], *,
                            swap_fn: Callable[[str], str] | None = None,
                            swapped_texts: Sequence[str] | None = None,
                            groups=None, distance: str = "tv",
                            batch_size: int | None = None
                            ) -> CounterfactualResult:
  """Counterfactual token fairness of `predict_fn` on `texts`.

  Args:
    predict_fn: texts (a list of B strings) -> [B] scores or [B, C]
      probabilities (a batched, ideally jitted model call).
    texts: inputs x.
    swap_fn: str -> str producing x' (e.g. `CounterfactualSwapper().swap`);
      or give `swapped_texts` (exactly one of the two).
    groups: optional group label per input, e.g. the gender of x.
    distance: see module doc ("tv" for [B, C], "abs" for [B]).
    batch_size: call `predict_fn` on at most this many texts at a time
      (None: all at once).
  """
  texts = list(texts)
  if (swap_fn is None) == (swapped_texts is None):
    raise ValueError("pass exactly one of swap_fn and swapped_texts")
  cf = [swap_fn(t) for t in texts] if swap_fn is not None else list(
      swapped_texts)
  if len(cf) != len(texts):
    raise ValueError(f"swapped_texts has {len(cf)} entries; texts has "
                     f"{len(texts)}")
  if not texts:
    raise ValueError("texts is empty")

  def run(xs):
    if batch_size is None:
      return np.asarray(predict_fn(xs))
    return np.concatenate([np.asarray(predict_fn(xs[i:i + batch_size]))
                           for i in range(0, len(xs), batch_size)])
  s, s_cf = run(texts), run(cf)
  if len(s) != len(texts):
    raise ValueError(f"predict_fn returned {len(s)} outputs for "
                     f"{len(texts)} texts")
  gaps = counterfactual_gaps(jnp.asarray(s), jnp.asarray(s_cf),
                             distance=distance)
  changed = np.array([a != b for a, b in zip(texts, cf)])
  return summarize_gaps(np.asarray(gaps), changed, groups)
