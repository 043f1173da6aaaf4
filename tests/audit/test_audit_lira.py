"""Membership scores and LiRA against independent numpy/scipy references."""

import math

import numpy as np
import pytest
from scipy import stats

from trustjax import audit


# ---------------------------------------------------------------- scores


def np_scores(logits, labels):
  """float64 references written from the definitions, one row at a time."""
  loss, conf, lsc = [], [], []
  for z, y in zip(np.asarray(logits, np.float64), labels):
    p = np.exp(z - z.max())
    p /= p.sum()
    loss.append(-math.log(p[y]))
    conf.append(p[y])
    lsc.append(math.log(p[y]) - math.log(np.sum(np.delete(p, y))))
  return np.array(loss), np.array(conf), np.array(lsc)


def test_scores_match_definitions():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (64, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 64)
  ref = np_scores(logits, labels)
  np.testing.assert_allclose(audit.loss(logits, labels), ref[0], rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(audit.confidence(logits, labels), ref[1],
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(audit.logit_scaled_confidence(logits, labels),
                             ref[2], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(audit.score("loss", logits, labels), ref[0],
                             rtol=1e-4, atol=1e-5)


def test_logit_scaled_confidence_is_stable():
  # p_y = 1 - ~e^-60: float probabilities round to 1 and log(p/(1-p)) = inf.
  logits = np.array([[60.0, 0.0, 0.0], [-80.0, 0.0, 10.0]], np.float32)
  labels = np.array([0, 0])
  got = np.asarray(audit.logit_scaled_confidence(logits, labels))
  # exact: z_y - logsumexp(others)
  want = [60.0 - math.log(2.0), -80.0 - (10.0 + math.log1p(math.exp(-10.0)))]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.isfinite(got).all()
  # Stacked [K, N, C] inputs work too.
  st = np.asarray(audit.logit_scaled_confidence(np.stack([logits] * 3),
                                                np.stack([labels] * 3)))
  assert st.shape == (3, 2)


def test_score_errors():
  with pytest.raises(ValueError, match="labels shape"):
    audit.loss(np.zeros((4, 3)), np.zeros(5, int))
  with pytest.raises(ValueError, match="unknown"):
    audit.score("entropy", np.zeros((4, 3)), np.zeros(4, int))


def test_threshold_attack_and_input_data():
  rng = np.random.default_rng(1)
  loss_in, loss_out = rng.exponential(0.5, 200), rng.exponential(1.0, 300)
  res = audit.threshold_attack(audit.AttackInputData(loss_train=loss_in,
                                                     loss_test=loss_out))
  # AUC of -loss: P(loss_in < loss_out) by brute force.
  want = np.mean(loss_in[:, None] < loss_out[None, :])
  assert res.get_auc() == pytest.approx(want)
  logits = rng.normal(size=(50, 4))
  labels = rng.integers(0, 4, 50)
  data = audit.AttackInputData(logits_train=logits[:20],
                               labels_train=labels[:20],
                               logits_test=logits[20:], labels_test=labels[20:])
  np.testing.assert_allclose(data.get_loss_train(),
                             np_scores(logits[:20], labels[:20])[0], rtol=1e-4)
  r2 = audit.threshold_attack(data, "logit_scaled_confidence")
  assert r2.attack_type == "threshold[logit_scaled_confidence]"
  with pytest.raises(ValueError, match="loss_train is None"):
    audit.AttackInputData(loss_test=loss_out).get_loss_train()
  with pytest.raises(ValueError, match="loss_train has 1 non-finite"):
    audit.threshold_attack(audit.AttackInputData(
        loss_train=np.array([0.1, np.nan]), loss_test=loss_out))


# ---------------------------------------------------------------- LiRA


def ref_lira(x, s, m, online, fix_variance):
  """Algorithm 1 of Carlini et al. 2022, one example at a time (scipy)."""
  k, n = s.shape
  ins = [s[m[:, i], i] for i in range(n)]
  outs = [s[~m[:, i], i] for i in range(n)]
  if fix_variance:
    g_in = math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in ins)
                     / sum(v.size for v in ins))
    g_out = math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in outs)
                      / sum(v.size for v in outs))
  out = []
  for i in range(n):
    mu_o = outs[i].mean()
    sd_o = g_out if fix_variance else outs[i].std()
    if online:
      mu_i = ins[i].mean()
      sd_i = g_in if fix_variance else ins[i].std()
      out.append(stats.norm.logpdf(x[i], mu_i, sd_i)
                 - stats.norm.logpdf(x[i], mu_o, sd_o))
    else:
      out.append(math.log(stats.norm.cdf(x[i], mu_o, sd_o)))
  return np.array(out)


@pytest.mark.parametrize("fix_variance", [False, True])
def test_lira_matches_reference(fix_variance):
  rng = np.random.default_rng(2)
  k, n = 12, 40
  # Per-example difficulty: mean mu_n, members shifted up by 1.5.
  mu = rng.normal(0, 3, n)
  m = rng.uniform(size=(k, n)) < 0.5
  m[0], m[1] = True, False    # >= 2 IN and >= 2 OUT for every example
  m[2], m[3] = True, False
  s = mu[None] + 1.5 * m + rng.normal(0, 1, (k, n))
  x = mu + 1.5 * (rng.uniform(size=n) < 0.5) + rng.normal(0, 1, n)
  np.testing.assert_allclose(
      audit.lira_online(x, s, m, fix_variance=fix_variance),
      ref_lira(x, s, m, True, fix_variance), rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(
      audit.lira_offline(x, s, m, fix_variance=fix_variance),
      ref_lira(x, s, m, False, fix_variance), rtol=1e-8, atol=1e-8)


def test_lira_beats_global_threshold_on_heterogeneous_examples():
  """Examples differ in difficulty (per-example means spread widely), so a
  global threshold on the score is weak but the per-example test is strong:
  the situation LiRA was designed for."""
  rng = np.random.default_rng(3)
  k, n = 16, 4000
  mu = rng.normal(0, 4, n)
  m = audit.shadow_in_masks(k + 1, n, seed=0)
  s = mu[None] + 2.0 * m + rng.normal(0, 1, (k + 1, n))
  x, member, shadows, shadow_in = audit.leave_one_out(s, m, 0)
  on = audit.lira_online(x, shadows, shadow_in)
  off = audit.lira_offline(x, shadows, shadow_in)
  glob = audit.evaluate_attack("global", x[member], x[~member])
  r_on = audit.evaluate_attack("online", on[member], on[~member])
  r_off = audit.evaluate_attack("offline", off[member], off[~member])
  assert r_on.get_auc() > 0.8 and r_off.get_auc() > 0.75
  assert glob.get_auc() < 0.7
  assert r_on.tpr_at_fpr(0.01) > 3 * glob.tpr_at_fpr(0.01)


def test_shadow_in_masks_balanced():
  m = audit.shadow_in_masks(8, 100, seed=1)
  assert m.dtype == bool and m.shape == (8, 100)
  np.testing.assert_array_equal(m.sum(0), 4)
  ind = audit.shadow_in_masks(8, 5000, seed=1, balanced=False)
  assert abs(ind.mean() - 0.5) < 0.01 and len(set(ind.sum(0))) > 4
  with pytest.raises(ValueError, match="num_models=1"):
    audit.shadow_in_masks(1, 10)


def _loo_online_auc(masks, scores, filter_counts):
  a, b = [], []
  for t in range(masks.shape[0]):
    x, member, sh, sh_in = audit.leave_one_out(scores, masks, t)
    if filter_counts:
      n_in, n_out = sh_in.sum(0), (~sh_in).sum(0)
      ok = (n_in >= 2) & (n_out >= 2)
      x, member, sh, sh_in = x[ok], member[ok], sh[:, ok], sh_in[:, ok]
    v = audit.lira_online(x, sh, sh_in)
    a.append(v[member])
    b.append(v[~member])
  return audit.auc_rank(np.concatenate(a), np.concatenate(b))


def test_balanced_masks_leak_in_leave_one_out():
  """Scores carry no membership signal at all. With balanced masks and few
  models, the shadows' IN count (K/2 - 1 vs K/2) gives the target's
  membership away and online LiRA's AUC departs from 1/2; independent masks
  (filtered to >= 2 IN and OUT shadows) keep it at 1/2."""
  rng = np.random.default_rng(4)
  k, n = 8, 3000
  scores = rng.normal(size=(k, n)) + rng.normal(0, 3, n)[None]
  bal = _loo_online_auc(audit.shadow_in_masks(k, n, 0), scores, False)
  ind = _loo_online_auc(audit.shadow_in_masks(k, n, 0, balanced=False),
                        scores, True)
  assert abs(bal - 0.5) > 0.03
  assert abs(ind - 0.5) < 0.015


def test_lira_errors():
  x = np.zeros(3)
  s = np.zeros((4, 3))
  m = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 0], [0, 1, 1]], bool)
  # example 1 has no OUT model: offline needs OUT.
  with pytest.raises(ValueError, match=r"fewer than 1 OUT .*example 1"):
    audit.lira_offline(x, s, m, fix_variance=True)
  with pytest.raises(ValueError, match="fewer than 2 OUT"):
    audit.lira_offline(x, s, m)
  with pytest.raises(ValueError, match="OUT"):
    audit.lira_online(x, s, m, fix_variance=True)
  bad = s.copy()
  bad[2, 1] = np.nan
  m_ok = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)
  with pytest.raises(ValueError, match="model 2, example 1"):
    audit.lira_online(x, bad, m_ok)
  with pytest.raises(ValueError, match="target_scores has 1 non-finite"):
    audit.lira_online(np.array([0, np.nan, 0]), s, m_ok)
  with pytest.raises(ValueError, match="shape"):
    audit.lira_online(x, s[:, :2], m_ok[:, :2])
  with pytest.raises(ValueError, match="target=5"):
    audit.leave_one_out(s, m, 5)
