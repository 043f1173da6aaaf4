"""Group fairness metrics with fairlearn's conventions, plus bootstrap CIs.

Per-group rates (accuracy, selection rate, TPR, FPR) and their disparities:
demographic parity, equalized odds and equal opportunity (Hardt et al.,
NeurIPS 2016), as differences and ratios. Conventions follow
`fairlearn.metrics` (0.15) exactly, and the tests compare to it:

- Differences are unsigned: `max_g r_g - min_g r_g` ("between_groups") or
  `max_g |r_g - r_overall|` ("to_overall").
- Ratios are at most 1: `min_g r_g / max_g r_g` ("between_groups"; 0/0 is
  NaN, as in fairlearn) or `min_g min(r_g/r, r/r_g)` with `r` the overall
  rate ("to_overall").
- TPR of a group without positive labels and FPR of a group without negative
  labels are 0 (sklearn's `confusion_matrix(normalize="true")`, which
  fairlearn uses), not NaN.
- Equalized odds aggregates the TPR and FPR disparities with
  `agg="worst_case"` (max of the differences / min of the ratios) or
  `agg="mean"`.

Beyond fairlearn:
- Empty groups. Groups are the sorted unique values of `groups`, plus any
  listed in `group_names` that have no example. An empty group's rates are
  NaN in `group_metrics` and it is left out of every difference and ratio
  (fairlearn never sees such groups, so the numbers agree). If every group is
  empty the disparity is NaN.
- A single (non-empty) group: difference 0.0, ratio 1.0 (NaN if its rate is
  0, since 0/0), as fairlearn returns.
- Multi-class (`pos_label=None`): each class c is scored one-vs-rest
  (label == c is positive), the disparity is computed per class as above,
  and the per-class values are aggregated with `class_agg`: "worst_case"
  (largest difference / smallest ratio over classes; NaN classes skipped) or
  "mean" (mean over classes, NaN skipped). Classes are the sorted union of
  the labels in `y_true` and `y_pred` unless `classes` is given.
- Bootstrap confidence intervals (`bootstrap_ci`): examples are resampled
  with replacement (multinomial counts, vectorised over resamples as one
  matrix product), percentile intervals.

Everything here is host-side numpy on label arrays: no model is involved.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

_METHODS = ("between_groups", "to_overall")
_AGGS = ("worst_case", "mean")


def _as_1d(name: str, x: Any) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim == 2 and a.shape[1] == 1:
    a = a[:, 0]
  if a.ndim != 1:
    raise ValueError(f"{name} must be 1-D [N]; got shape {a.shape}")
  return a


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
  if value not in valid:
    raise ValueError(f"{name}={value!r}; valid: {tuple(valid)}")


@dataclasses.dataclass(frozen=True)
class _Prepared:
  groups: list            # group names, sorted (plus empty ones listed)
  gidx: np.ndarray        # int [N] index into groups
  classes: list | None    # None: binary with pos_label
  pos: np.ndarray         # bool [K, N] true label is positive (per class)
  sel: np.ndarray         # bool [K, N] predicted positive (per class)
  correct: np.ndarray     # bool [N]
  weight: np.ndarray      # float [N]


def _prepare(y_true, y_pred, groups, *, pos_label, sample_weight,
             group_names, classes) -> _Prepared:
  y_true = _as_1d("y_true", y_true)
  y_pred = _as_1d("y_pred", y_pred)
  groups = _as_1d("groups", groups)
  if len(y_true) != len(y_pred):
    raise ValueError(f"y_true has {len(y_true)} entries but y_pred has "
                     f"{len(y_pred)}; they must have the same length")
  if len(groups) != len(y_true):
    raise ValueError(f"groups has {len(groups)} entries but y_true/y_pred "
                     f"have {len(y_true)}; one group label per example")
  if len(y_true) == 0:
    raise ValueError("y_true/y_pred are empty: no examples to score")
  if np.issubdtype(groups.dtype, np.floating) or np.issubdtype(
      groups.dtype, np.complexfloating):
    raise ValueError(
        f"groups has float dtype {groups.dtype} (e.g. {groups[:3]}); group "
        "labels must be integers, bools or strings (cast with "
        ".astype(int) if they are whole numbers)")
  if sample_weight is None:
    weight = np.ones(len(y_true), np.float64)
  else:
    weight = _as_1d("sample_weight", sample_weight).astype(np.float64)
    if len(weight) != len(y_true):
      raise ValueError(f"sample_weight has {len(weight)} entries; expected "
                       f"{len(y_true)}")
    if np.any(weight < 0) or not np.all(np.isfinite(weight)):
      raise ValueError("sample_weight must be finite and non-negative")
  present, inv = np.unique(groups, return_inverse=True)
  present = present.tolist()
  names = present
  if group_names is not None:
    names = list(group_names)
    extra = [g for g in present if g not in names]
    if extra:
      raise ValueError(f"groups holds {extra}, not listed in "
                       f"group_names={names}")
  lookup = {g: i for i, g in enumerate(names)}
  gidx = np.array([lookup[g] for g in present], np.int64)[inv.reshape(-1)]
  if pos_label is None:
    cls = (list(np.unique(np.concatenate([y_true, y_pred])))
           if classes is None else list(classes))
    pos = np.stack([y_true == c for c in cls])
    sel = np.stack([y_pred == c for c in cls])
  else:
    cls = None
    pos = (y_true == pos_label)[None]
    sel = (y_pred == pos_label)[None]
  return _Prepared(names, gidx, cls, pos, sel, y_true == y_pred, weight)


def _counts(p: _Prepared, weights: np.ndarray) -> np.ndarray:
  """Weighted confusion counts [R, K, G, 5]: tp, fp, fn, tn, correct.

  `weights[R, N]` (one row per resample); a weighted sum over examples
  written as a matrix product (one GEMM for all resamples).
  """
  k, n = p.pos.shape
  g = len(p.groups)
  onehot = np.zeros((n, g), np.float64)
  onehot[np.arange(n), p.gidx] = 1.0
  cells = np.stack([p.pos & p.sel, ~p.pos & p.sel, p.pos & ~p.sel,
                    ~p.pos & ~p.sel,
                    np.broadcast_to(p.correct, p.pos.shape)], -1)  # [K,N,5]
  ind = cells[:, :, None, :] * onehot[None, :, :, None]          # [K,N,G,5]
  ind = np.moveaxis(ind, 1, 0).reshape(n, k * g * 5)
  return (weights @ ind).reshape(weights.shape[0], k, g, 5)


def _safe_div(num, den, empty_value):
  with np.errstate(invalid="ignore", divide="ignore"):
    out = num / den
  return np.where(den > 0, out, empty_value)


def _rates(c: np.ndarray) -> dict[str, np.ndarray]:
  """Rates [..., K, G] from counts [..., K, G, 5]; empty groups NaN."""
  tp, fp, fn, tn, corr = (c[..., i] for i in range(5))
  n = tp + fp + fn + tn
  empty = n <= 0
  nan = np.nan
  out = {
      "count": n,
      "selection_rate": _safe_div(tp + fp, n, nan),
      "accuracy": _safe_div(corr, n, nan),
      "tpr": _safe_div(tp, tp + fn, 0.0),
      "fpr": _safe_div(fp, fp + tn, 0.0),
  }
  for k in ("tpr", "fpr"):
    out[k] = np.where(empty, nan, out[k])
  return out


def _overall_rates(c: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[..., 0] for k, v in _rates(c.sum(-2, keepdims=True)).items()}


def _nan_reduce(fn, x, axis):
  with np.errstate(invalid="ignore"):
    allnan = np.all(np.isnan(x), axis=axis)
    filled = np.where(np.isnan(x), 0.0, x)
    if fn is np.nanmax:
      r = np.max(np.where(np.isnan(x), -np.inf, x), axis=axis)
    elif fn is np.nanmin:
      r = np.min(np.where(np.isnan(x), np.inf, x), axis=axis)
    else:  # mean
      cnt = np.sum(~np.isnan(x), axis=axis)
      r = np.sum(filled, axis=axis) / np.maximum(cnt, 1)
  return np.where(allnan, np.nan, r)


def _difference(r: np.ndarray, overall: np.ndarray, method: str) -> np.ndarray:
  """r[..., G] -> [...]: unsigned difference; NaN groups (empty) ignored."""
  if method == "between_groups":
    return _nan_reduce(np.nanmax, r, -1) - _nan_reduce(np.nanmin, r, -1)
  return _nan_reduce(np.nanmax, np.abs(r - overall[..., None]), -1)


def _ratio(r: np.ndarray, overall: np.ndarray, method: str) -> np.ndarray:
  """r[..., G] -> [...]: ratio at most 1 (0/0 -> NaN as in fairlearn)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    if method == "between_groups":
      return _nan_reduce(np.nanmin, r, -1) / _nan_reduce(np.nanmax, r, -1)
    q = r / overall[..., None]
    q = np.where(q > 1, 1.0 / q, q)
    return _nan_reduce(np.nanmin, q, -1)


def _agg_classes(v: np.ndarray, class_agg: str, smaller_is_worse: bool
                 ) -> np.ndarray:
  """v[..., K] -> [...] over one-vs-rest classes."""
  if class_agg == "mean":
    return _nan_reduce(None, v, -1)
  return _nan_reduce(np.nanmin if smaller_is_worse else np.nanmax, v, -1)


# A disparity: (counts[R,K,G,5]) -> values [R]
_Disparity = Callable[[np.ndarray], np.ndarray]


def _make(kind: str, rate_names: tuple[str, ...], *, method: str, agg: str,
          class_agg: str) -> _Disparity:
  _check_choice("method", method, _METHODS)
  _check_choice("agg", agg, _AGGS)
  _check_choice("class_agg", class_agg, _AGGS)
  is_ratio = kind == "ratio"

  def fn(c: np.ndarray) -> np.ndarray:
    rates, overall = _rates(c), _overall_rates(c)
    per = []
    for name in rate_names:
      f = _ratio if is_ratio else _difference
      per.append(f(rates[name], overall[name], method))   # [R, K]
    v = np.stack(per, -1)                                  # [R, K, M]
    if len(rate_names) > 1 and agg == "worst_case":
      # fairlearn: max of differences / min of ratios (NaN propagates).
      v = v.min(-1) if is_ratio else v.max(-1)
    else:
      v = v.mean(-1)
    return _agg_classes(v, class_agg, smaller_is_worse=is_ratio)
  return fn


_DEFS = {
    "demographic_parity_difference": ("difference", ("selection_rate",)),
    "demographic_parity_ratio": ("ratio", ("selection_rate",)),
    "equalized_odds_difference": ("difference", ("tpr", "fpr")),
    "equalized_odds_ratio": ("ratio", ("tpr", "fpr")),
    "equal_opportunity_difference": ("difference", ("tpr",)),
    "equal_opportunity_ratio": ("ratio", ("tpr",)),
}
METRIC_NAMES = tuple(_DEFS)


def _disparity(name: str, y_true, y_pred, groups, *, method, agg, class_agg,
               pos_label, sample_weight, group_names, classes) -> float:
  p = _prepare(y_true, y_pred, groups, pos_label=pos_label,
               sample_weight=sample_weight, group_names=group_names,
               classes=classes)
  kind, rates = _DEFS[name]
  fn = _make(kind, rates, method=method, agg=agg, class_agg=class_agg)
  return float(fn(_counts(p, p.weight[None]))[0])


def _public(name: str, doc: str):
  def metric(y_true, y_pred, groups, *, method: str = "between_groups",
             agg: str = "worst_case", class_agg: str = "worst_case",
             pos_label: Any = 1, sample_weight=None,
             group_names: Sequence[Any] | None = None,
             classes: Sequence[Any] | None = None) -> float:
    return _disparity(name, y_true, y_pred, groups, method=method, agg=agg,
                      class_agg=class_agg, pos_label=pos_label,
                      sample_weight=sample_weight, group_names=group_names,
                      classes=classes)
  metric.__name__ = metric.__qualname__ = name
  metric.__doc__ = doc + """

  Args:
    y_true, y_pred: labels [N] (any comparable dtype).
    groups: group label per example [N]: ints, bools or strings (floats are
      refused with ValueError).
    method: "between_groups" (max - min, or min / max) or "to_overall"
      (largest |group - overall|, or smallest ratio to the overall rate).
    agg: equalized odds only: "worst_case" or "mean" over {TPR, FPR}.
    class_agg: with `pos_label=None` (one-vs-rest multi-class), "worst_case"
      or "mean" over classes.
    pos_label: the positive label (binary); None for one-vs-rest.
    sample_weight: optional non-negative weights [N].
    group_names: all groups, to report absent (empty) ones; see module doc.
    classes: class list for one-vs-rest (default: labels seen).

  Returns:
    A float; NaN when undefined (all groups empty, or 0/0 ratio).
  """
  return metric


demographic_parity_difference = _public(
    "demographic_parity_difference",
    "Demographic parity difference: spread of P(y_pred = pos | group).")
demographic_parity_ratio = _public(
    "demographic_parity_ratio",
    "Demographic parity ratio (<= 1): min / max of P(y_pred = pos | group).")
equalized_odds_difference = _public(
    "equalized_odds_difference",
    "Equalized odds difference: TPR and FPR spreads, worst case or mean.")
equalized_odds_ratio = _public(
    "equalized_odds_ratio",
    "Equalized odds ratio (<= 1): TPR and FPR ratios, worst case or mean.")
equal_opportunity_difference = _public(
    "equal_opportunity_difference",
    "Equal opportunity difference: spread of the TPR over groups.")
equal_opportunity_ratio = _public(
    "equal_opportunity_ratio",
    "Equal opportunity ratio (<= 1): min / max TPR over groups.")


@dataclasses.dataclass(frozen=True)
class GroupMetrics:
  """Per-group rates; arrays are [G] (binary) or [K, G] (one-vs-rest).

  `groups` names the G groups (sorted; empty ones from `group_names`
  included, with NaN rates and count 0); `classes` the K classes or None.
  `accuracy` is the plain accuracy of each group ([G], all classes).
  `overall` holds the same rates over all examples.
  """
  groups: list
  classes: list | None
  count: np.ndarray
  accuracy: np.ndarray
  selection_rate: np.ndarray
  tpr: np.ndarray
  fpr: np.ndarray
  overall: dict

  def as_dict(self) -> dict:
    """JSON-friendly {rate: {group: value}} (binary) or per class."""
    out = {}
    for k in ("count", "accuracy", "selection_rate", "tpr", "fpr"):
      v = getattr(self, k)
      if v.ndim == 1:
        out[k] = {str(g): float(x) for g, x in zip(self.groups, v)}
      else:
        out[k] = {str(c): {str(g): float(x) for g, x in zip(self.groups, row)}
                  for c, row in zip(self.classes, v)}
    return out


def group_metrics(y_true, y_pred, groups, *, pos_label: Any = 1,
                  sample_weight=None, group_names: Sequence[Any] | None = None,
                  classes: Sequence[Any] | None = None) -> GroupMetrics:
  """Per-group count, accuracy, selection rate, TPR and FPR.

  Same arguments and conventions as the disparity functions (module doc):
  counts are weighted sums when `sample_weight` is given.
  """
  p = _prepare(y_true, y_pred, groups, pos_label=pos_label,
               sample_weight=sample_weight, group_names=group_names,
               classes=classes)
  c = _counts(p, p.weight[None])[0]          # [K, G, 5]
  r, o = _rates(c), _overall_rates(c)
  squeeze = (lambda a: a[0]) if p.classes is None else (lambda a: a)
  return GroupMetrics(
      groups=p.groups, classes=p.classes,
      count=r["count"][0], accuracy=r["accuracy"][0],
      selection_rate=squeeze(r["selection_rate"]), tpr=squeeze(r["tpr"]),
      fpr=squeeze(r["fpr"]),
      overall={"count": float(o["count"][0]),
               "accuracy": float(o["accuracy"][0]),
               **{k: squeeze(o[k]) for k in ("selection_rate", "tpr",
                                             "fpr")}})


@dataclasses.dataclass(frozen=True)
class BootstrapCI:
  """Point estimate, percentile interval [low, high] and the R resamples."""
  estimate: float
  low: float
  high: float
  samples: np.ndarray


def bootstrap_ci(metric: str, y_true, y_pred, groups, *,
                 num_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, method: str = "between_groups",
                 agg: str = "worst_case", class_agg: str = "worst_case",
                 pos_label: Any = 1, sample_weight=None,
                 group_names: Sequence[Any] | None = None,
                 classes: Sequence[Any] | None = None) -> BootstrapCI:
  """Percentile bootstrap confidence interval of a disparity metric.

  Each resample draws N examples with replacement (multinomial counts per
  example, times `sample_weight`), recomputes the metric, and the interval
  is the ((1-confidence)/2, (1+confidence)/2) quantiles of the finite
  resampled values (resamples where the metric is NaN, e.g. a group drawn
  empty, are ignored). Host-side numpy, `np.random.default_rng(seed)`.

  Args:
    metric: one of METRIC_NAMES, e.g. "equalized_odds_difference".
    num_resamples: R >= 2. confidence: in (0, 1).
    Other arguments: as in the metric functions.
  """
  _check_choice("metric", metric, METRIC_NAMES)
  if int(num_resamples) < 2:
    raise ValueError(f"num_resamples={num_resamples} must be >= 2")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence} must be in (0, 1)")
  p = _prepare(y_true, y_pred, groups, pos_label=pos_label,
               sample_weight=sample_weight, group_names=group_names,
               classes=classes)
  kind, rates = _DEFS[metric]
  fn = _make(kind, rates, method=method, agg=agg, class_agg=class_agg)
  estimate = float(fn(_counts(p, p.weight[None]))[0])
  n = len(p.gidx)
  rng = np.random.default_rng(seed)
  draws = rng.multinomial(n, np.full(n, 1.0 / n), size=int(num_resamples))
  samples = fn(_counts(p, draws * p.weight[None]))
  finite = samples[np.isfinite(samples)]
  if finite.size == 0:
    lo = hi = float("nan")
  else:
    lo, hi = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
  return BootstrapCI(estimate, float(lo), float(hi), samples)
