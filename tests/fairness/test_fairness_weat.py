"""WEAT: planted associations, brute-force p-values, word lists."""

import itertools
import json
import os

import numpy as np
import pytest
from scipy.spatial import distance

from conftest import data_dir_or_skip
from trustjax.fairness import weat as W


def planted(t_x, t_y, n_attr=10, seed=0):
  """Unit vectors w = t e1 + sqrt(1-t^2) e_w with private e_w, and
  attributes A ~ +e1, B ~ -e1 spread in their own directions, so that
  s(w, A, B) = k t_w with k > 0 and d equals Cohen's d of the t's."""
  rng = np.random.default_rng(seed)
  nx, ny = len(t_x), len(t_y)
  dim = 2 + nx + ny + 2 * n_attr
  eye = np.eye(dim)
  t = np.concatenate([t_x, t_y])
  targets = t[:, None] * eye[0] + np.sqrt(1 - t**2)[:, None] * eye[2:2 + nx + ny]
  spread = eye[2 + nx + ny:]
  c = rng.uniform(0.5, 1.0, 2 * n_attr)[:, None]
  a = c[:n_attr] * eye[0] + spread[:n_attr]
  b = -c[n_attr:] * eye[0] + spread[n_attr:]
  return targets[:nx], targets[nx:], a, b


def ref_assoc(w, a, b):
  return (np.mean([1 - distance.cosine(w, x) for x in a]) -
          np.mean([1 - distance.cosine(w, x) for x in b]))


def test_planted_effect_sign_and_size():
  rng = np.random.default_rng(1)
  n, delta, sigma = 40, 0.15, 0.2
  t_x = np.clip(rng.normal(delta, sigma, n), -0.95, 0.95)
  t_y = np.clip(rng.normal(-delta, sigma, n), -0.95, 0.95)
  x, y, a, b = planted(t_x, t_y)
  r = W.weat(x, y, a, b, num_permutations=2000)
  t = np.concatenate([t_x, t_y])
  assert r.effect_size == pytest.approx(
      (t_x.mean() - t_y.mean()) / t.std(ddof=1), rel=1e-4)
  planted_d = 2 * delta / np.sqrt(sigma**2 + delta**2)   # population value
  assert r.effect_size == pytest.approx(planted_d, abs=0.35)
  assert r.p_value < 1e-3
  # swapping targets flips the sign; swapping attributes too
  assert W.weat(y, x, a, b).effect_size == pytest.approx(-r.effect_size,
                                                         rel=1e-5)
  assert W.weat(x, y, b, a).effect_size == pytest.approx(-r.effect_size,
                                                         rel=1e-5)


def test_no_association_is_small_and_not_significant():
  rng = np.random.default_rng(2)
  t = np.clip(rng.normal(0, 0.2, 60), -0.9, 0.9)
  r = W.weat(*planted(t[:30], t[30:]), num_permutations=2000)
  assert abs(r.effect_size) < 0.5
  assert r.p_value > 0.05


def test_effect_and_statistic_match_scipy_loop():
  rng = np.random.default_rng(3)
  x, y, a, b = (rng.normal(size=(n, 16)) for n in (5, 6, 7, 4))
  s = np.array([ref_assoc(w, a, b) for w in np.concatenate([x, y])])
  r = W.weat(x, y, a, b)
  assert r.statistic == pytest.approx(s[:5].sum() - s[5:].sum(), abs=1e-5)
  assert r.effect_size == pytest.approx(
      (s[:5].mean() - s[5:].mean()) / np.std(s, ddof=1), rel=1e-4)


def test_exact_p_value_equals_brute_force_and_random_is_close():
  rng = np.random.default_rng(4)
  x, y, a, b = (rng.normal(size=(n, 8)) + (0.3 if i == 0 else 0)
                for i, n in enumerate((5, 5, 6, 6)))
  xy = np.concatenate([x, y])
  obs = sum(ref_assoc(w, a, b) for w in x) - sum(ref_assoc(w, a, b) for w in y)
  count = total = 0
  for idx in itertools.combinations(range(10), 5):
    rest = [i for i in range(10) if i not in idx]
    st = (sum(ref_assoc(xy[i], a, b) for i in idx) -
          sum(ref_assoc(xy[i], a, b) for i in rest))
    count += st >= obs - 1e-9
    total += 1
  exact = W.weat(x, y, a, b).p_value
  assert exact == pytest.approx(count / total)
  sampled = W.weat(x, y, a, b, exact_limit=0, num_permutations=4000).p_value
  assert sampled == pytest.approx(exact, abs=0.03)


def test_bad_sets_raise():
  with pytest.raises(ValueError, match="sizes differ"):
    W.weat(np.ones((3, 4)), np.ones((3, 5)), np.ones((2, 4)), np.ones((2, 4)))
  with pytest.raises(ValueError, match="non-empty"):
    W.weat(np.ones((3, 4)), np.ones((0, 4)), np.ones((2, 4)), np.ones((2, 4)))


def test_load_weat_tests_real_file():
  path = data_dir_or_skip("weat", "weat_tests.json")
  tests = W.load_weat_tests(path)
  with open(path) as f:
    raw = json.load(f)
  assert set(tests) == set(raw)
  t6 = tests["weat6"]
  assert t6.X == tuple(raw["weat6"]["X"]) and t6.B == tuple(raw["weat6"]["B"])
  assert len(t6.words()) == len(set(t6.X + t6.Y + t6.A + t6.B))
  assert W.load_weat_tests(os.path.dirname(os.path.dirname(path)))[
      "weat1"].names[0] == raw["weat1"]["X_name"]
