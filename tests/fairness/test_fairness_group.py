"""Group metrics equal fairlearn's on random predictions and groups."""

import numpy as np
import pytest

from trustjax.fairness import group as G

fl = pytest.importorskip("fairlearn.metrics")

_PAIRS = {
    "demographic_parity_difference": fl.demographic_parity_difference,
    "demographic_parity_ratio": fl.demographic_parity_ratio,
    "equal_opportunity_difference": fl.equal_opportunity_difference,
    "equal_opportunity_ratio": fl.equal_opportunity_ratio,
}


def _random(seed, n=200, num_groups=3, p=0.5):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  yhat = np.where(rng.random(n) < 0.7, y, 1 - y) * (rng.random(n) < p + 0.3)
  g = rng.integers(0, num_groups, n)
  return y, yhat.astype(int), g


def _close(a, b):
  if np.isnan(b):
    assert np.isnan(a), (a, b)
  else:
    assert a == pytest.approx(b, abs=1e-12), (a, b)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
def test_matches_fairlearn_random(seed, method):
  y, yhat, g = _random(seed, n=50 + 30 * seed, num_groups=2 + seed % 4)
  w = np.random.default_rng(seed + 100).random(len(y)) if seed % 2 else None
  for name, ref in _PAIRS.items():
    ours = getattr(G, name)(y, yhat, g, method=method, sample_weight=w)
    _close(ours, ref(y, yhat, sensitive_features=g, method=method,
                     sample_weight=w))
  for agg in ("worst_case", "mean"):
    for name, ref in (("equalized_odds_difference",
                       fl.equalized_odds_difference),
                      ("equalized_odds_ratio", fl.equalized_odds_ratio)):
      ours = getattr(G, name)(y, yhat, g, method=method, agg=agg,
                              sample_weight=w)
      _close(ours, ref(y, yhat, sensitive_features=g, method=method, agg=agg,
                       sample_weight=w))


def test_per_group_rates_match_fairlearn_metricframe():
  y, yhat, g = _random(7, n=300, num_groups=4)
  names = np.array(["a", "b", "c", "d"])[g]         # string groups
  mf = fl.MetricFrame(
      metrics={"selection_rate": fl.selection_rate,
               "tpr": fl.true_positive_rate, "fpr": fl.false_positive_rate,
               "count": fl.count},
      y_true=y, y_pred=yhat, sensitive_features=names)
  ours = G.group_metrics(y, yhat, names)
  assert ours.groups == ["a", "b", "c", "d"]
  for k in ("selection_rate", "tpr", "fpr", "count"):
    np.testing.assert_allclose(getattr(ours, k), mf.by_group[k].to_numpy())
  acc = [np.mean(y[g == i] == yhat[g == i]) for i in range(4)]
  np.testing.assert_allclose(ours.accuracy, acc)


def test_group_without_positives_has_tpr_zero_like_fairlearn():
  y = np.array([1, 1, 0, 0, 0, 0])
  yhat = np.array([1, 0, 1, 0, 1, 0])
  g = np.array([0, 0, 0, 1, 1, 1])                  # group 1: no positives
  _close(G.equal_opportunity_difference(y, yhat, g),
         fl.equal_opportunity_difference(y, yhat, sensitive_features=g))
  _close(G.equalized_odds_ratio(y, yhat, g),
         fl.equalized_odds_ratio(y, yhat, sensitive_features=g))
  assert G.group_metrics(y, yhat, g).tpr[1] == 0.0


def test_empty_group_is_nan_and_left_out():
  y, yhat, g = _random(3, n=120, num_groups=2)
  gm = G.group_metrics(y, yhat, g, group_names=[0, 1, 2])
  assert gm.count[2] == 0
  assert np.isnan(gm.selection_rate[2]) and np.isnan(gm.tpr[2])
  for name, ref in _PAIRS.items():
    _close(getattr(G, name)(y, yhat, g, group_names=[0, 1, 2]),
           ref(y, yhat, sensitive_features=g))


def test_single_group_difference_zero_ratio_one():
  y, yhat, _ = _random(4, n=40)
  g = np.zeros(40, int)
  assert G.demographic_parity_difference(y, yhat, g) == 0.0
  assert G.demographic_parity_ratio(y, yhat, g) == 1.0
  assert G.equalized_odds_difference(y, yhat, g) == 0.0
  assert G.equalized_odds_ratio(y, yhat, g) == 1.0
  for name, ref in _PAIRS.items():
    _close(getattr(G, name)(y, yhat, g), ref(y, yhat, sensitive_features=g))
  # all-zero selection rate: 0/0 is NaN, as in fairlearn
  zeros = np.zeros(40, int)
  _close(G.demographic_parity_ratio(y, zeros, g),
         fl.demographic_parity_ratio(y, zeros, sensitive_features=g))


def test_multiclass_one_vs_rest_matches_fairlearn_per_class():
  rng = np.random.default_rng(11)
  n, k = 300, 4
  y = rng.integers(0, k, n)
  yhat = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
  g = rng.integers(0, 3, n)
  per = [fl.equalized_odds_difference((y == c).astype(int),
                                      (yhat == c).astype(int),
                                      sensitive_features=g)
         for c in range(k)]
  assert G.equalized_odds_difference(y, yhat, g, pos_label=None) == \
      pytest.approx(max(per), abs=1e-12)
  assert G.equalized_odds_difference(
      y, yhat, g, pos_label=None, class_agg="mean") == pytest.approx(
          np.mean(per), abs=1e-12)
  per_r = [fl.demographic_parity_ratio((y == c).astype(int),
                                       (yhat == c).astype(int),
                                       sensitive_features=g)
           for c in range(k)]
  assert G.demographic_parity_ratio(y, yhat, g, pos_label=None) == \
      pytest.approx(min(per_r), abs=1e-12)
  gm = G.group_metrics(y, yhat, g, pos_label=None)
  assert gm.selection_rate.shape == (k, 3)


def test_bootstrap_ci_brackets_estimate_and_shrinks_with_n():
  y, yhat, g = _random(5, n=200, num_groups=2)
  ci = G.bootstrap_ci("demographic_parity_difference", y, yhat, g,
                      num_resamples=400, seed=1)
  assert ci.low <= ci.estimate <= ci.high
  assert ci.samples.shape == (400,)
  # a hand-rolled resample loop gives the same values for the same draws
  rng = np.random.default_rng(1)
  draws = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=400)
  for r in (0, 17, 399):
    idx = np.repeat(np.arange(len(y)), draws[r])
    ref = fl.demographic_parity_difference(y[idx], yhat[idx],
                                           sensitive_features=g[idx])
    assert ci.samples[r] == pytest.approx(ref, abs=1e-12)
  big = [np.tile(a, 10) for a in (y, yhat, g)]
  ci_big = G.bootstrap_ci("demographic_parity_difference", *big,
                          num_resamples=400, seed=1)
  assert ci_big.high - ci_big.low < ci.high - ci.low


def test_bad_inputs_raise_clear_errors():
  y, yhat, g = _random(0, n=30)
  with pytest.raises(ValueError, match="float"):
    G.demographic_parity_difference(y, yhat, g.astype(float))
  with pytest.raises(ValueError, match="same length"):
    G.demographic_parity_difference(y, yhat[:-1], g)
  with pytest.raises(ValueError, match="groups has 29"):
    G.demographic_parity_difference(y, yhat, g[:-1])
  with pytest.raises(ValueError, match="agg"):
    G.equalized_odds_difference(y, yhat, g, agg="median")
  with pytest.raises(ValueError, match="not listed"):
    G.group_metrics(y, yhat, g, group_names=[0])
