"""Tests for trustjax.privacy.sampling (Poisson and shuffled samplers)."""

import dp_accounting
from dp_accounting import dp_event as dpe
import numpy as np
import pytest
from scipy import stats

from trustjax.privacy import accounting
from trustjax.privacy.sampling import PoissonSampler, ShuffledBatchSampler


def _sizes_and_counts(sampler, steps):
  sizes = np.zeros(steps, int)
  counts = np.zeros(sampler.num_examples, int)
  for t in range(steps):
    idx, mask = sampler.batch(t)
    sizes[t] = mask.sum()
    np.add.at(counts, idx[mask], 1)
  return sizes, counts


def test_poisson_batch_size_mean_variance_and_inclusion_rate():
  n, q, steps = 500, 0.05, 2000
  s = PoissonSampler(n, q, seed=3)
  sizes, counts = _sizes_and_counts(s, steps)
  mean, var = n * q, n * q * (1 - q)
  # Mean of 2000 draws: standard error sqrt(var/steps) ~ 0.11; allow 5 SE.
  assert abs(sizes.mean() - mean) < 5 * np.sqrt(var / steps)
  # Sample variance: relative SE ~ sqrt(2/steps) ~ 3.2%; allow 15%.
  assert abs(sizes.var(ddof=1) / var - 1) < 0.15
  # Each example's count ~ Binomial(steps, q); chi-square of all 500 counts.
  exp_c, var_c = steps * q, steps * q * (1 - q)
  chi2 = np.sum((counts - exp_c) ** 2 / var_c)
  assert stats.chi2.sf(chi2, df=n) > 1e-3
  # No single example far from q (Bonferroni over n at level 1e-3).
  z = np.abs(counts - exp_c) / np.sqrt(var_c)
  assert z.max() < stats.norm.isf(1e-3 / (2 * n))


def test_fixed_shapes_padding_and_sorted_unique_indices():
  s = PoissonSampler(100, 0.1, max_batch_size=20, seed=0)
  for t in range(50):
    idx, mask = s.batch(t)
    assert idx.shape == (20,) and idx.dtype == np.int32
    assert mask.shape == (20,) and mask.dtype == bool
    k = mask.sum()
    assert mask[:k].all() and not mask[k:].any()
    assert (idx[k:] == 0).all()
    real = idx[:k]
    assert len(np.unique(real)) == k and (np.diff(real) > 0).all()
    assert ((real >= 0) & (real < 100)).all()


def test_deterministic_per_seed_step_and_resume():
  a = PoissonSampler(300, 0.1, seed=7)
  b = PoissonSampler.from_state_dict(a.state_dict())
  order = [5, 1, 9, 1]
  for t in order:
    ia, ma = a.batch(t)
    ib, mb = b.batch(t)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(ma, mb)
  # Matches an independent reference of the documented rule.
  rng = np.random.default_rng([7, 9])
  ref = np.flatnonzero(rng.random(300) < 0.1)
  idx, mask = a.batch(9)
  np.testing.assert_array_equal(idx[mask], ref)
  # Other seed -> different batches.
  c = PoissonSampler(300, 0.1, seed=8)
  assert not np.array_equal(c.batch(9)[0], idx)


def test_default_max_batch_size_meets_tail_bound():
  s = PoissonSampler(1000, 0.05, seed=0, max_truncation_prob=1e-9)
  b = s.max_batch_size
  assert stats.binom.sf(b, 1001, 0.05) <= 1e-9 < stats.binom.sf(b - 1, 1001,
                                                                0.05)
  assert s.truncation_probability() == pytest.approx(
      stats.binom.sf(b, 1001, 0.05), rel=1e-12)
  s2 = PoissonSampler(1000, 0.05, seed=0, max_truncation_prob=1e-9, steps=1000)
  assert stats.binom.sf(s2.max_batch_size, 1001, 0.05) * 1000 <= 1e-9


def test_truncation_keeps_random_subset_and_event_is_truncated():
  n, q, b = 200, 0.5, 60  # mean 100 > 60: always truncated
  s = PoissonSampler(n, q, max_batch_size=b, seed=1)
  firsts = set()
  for t in range(20):
    idx, mask = s.batch(t)
    assert mask.all()
    rng = np.random.default_rng([1, t])
    full = np.flatnonzero(rng.random(n) < q)
    assert set(idx.tolist()) <= set(full.tolist())
    firsts.add(int(idx[0]))
  assert len(firsts) > 5  # a random subset, not always the smallest indices
  ev = s.dp_event(1.0, 3)
  assert ev == dpe.SelfComposedDpEvent(
      dpe.TruncatedSubsampledGaussianDpEvent(n + 1, q, b, 1.0), 3)


def test_truncated_event_accounted_by_pld():
  n, q, b = 1000, 0.02, 25   # mean 20: truncation is frequent
  s = PoissonSampler(n, q, max_batch_size=b, seed=0)
  ev = s.dp_event(1.0, 20)
  acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
  acc.compose(dpe.SelfComposedDpEvent(
      dpe.TruncatedSubsampledGaussianDpEvent(1001, q, b, 1.0), 20))
  eps = accounting.epsilon_from_event(ev, 1e-5,
                                      value_discretization_interval=1e-3)
  assert eps == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
  untruncated = accounting.epsilon(1.0, q, 20, 1e-5,
                                   value_discretization_interval=1e-3)
  assert eps > untruncated  # frequent truncation costs privacy here


def test_refuse_mode_raises_when_truncation_not_negligible():
  with pytest.raises(ValueError, match="truncation='refuse'"):
    PoissonSampler(1000, 0.05, max_batch_size=60, seed=0, truncation="refuse",
                   steps=100)
  s = PoissonSampler(1000, 0.05, max_batch_size=60, seed=0,
                     truncation="refuse")
  with pytest.raises(ValueError, match="max_truncation_prob"):
    s.dp_event(1.0, 100)
  ok = PoissonSampler(1000, 0.05, seed=0, truncation="refuse", steps=100)
  ok.dp_event(1.0, 100)  # default size chosen for 100 steps: fine


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_examples=0, sampling_rate=0.1), "num_examples"),
    (dict(num_examples=10, sampling_rate=0.0), "sampling_rate"),
    (dict(num_examples=10, sampling_rate=1.5), "sampling_rate"),
    (dict(num_examples=10, sampling_rate=0.1, max_batch_size=0),
     "max_batch_size"),
    (dict(num_examples=10, sampling_rate=0.1, truncation="ignore"),
     "truncation"),
])
def test_poisson_sampler_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    PoissonSampler(seed=0, **kwargs)


def test_shuffled_sampler_epochs_and_accounting():
  s = ShuffledBatchSampler(10, 4, seed=0)
  assert s.matches_poisson_accounting is False
  assert s.steps_per_epoch == 3
  seen = []
  for t in range(3):
    idx, mask = s.batch(t)
    assert idx.shape == (4,)
    seen += idx[mask].tolist()
  assert sorted(seen) == list(range(10))
  with pytest.raises(ValueError, match="does not match Poisson"):
    s.poisson_event(1.0, 6)
  assert isinstance(s.poisson_event(1.0, 6, allow_unaccounted=True),
                    dpe.SelfComposedDpEvent)
  # No-amplification bound: 7 steps touch 3 epochs.
  assert s.dp_event(2.0, 7) == dpe.SelfComposedDpEvent(
      dpe.GaussianDpEvent(2.0), 3)
  with pytest.raises(ValueError, match="batch_size"):
    ShuffledBatchSampler(3, 4, seed=0)


def test_full_batch_needs_no_truncation_accounting():
  s = PoissonSampler(50, 1.0, seed=0)
  assert s.max_batch_size == 51 and s.truncation_probability() == 0.0
  idx, mask = s.batch(0)
  assert mask.sum() == 50 and idx.shape == (51,)
  assert s.dp_event(1.0, 2) == dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(1.0, dpe.GaussianDpEvent(1.0)), 2)


def test_seed_positional_and_required():
  a = PoissonSampler(100, 0.1, 30, 5)
  b = PoissonSampler(100, 0.1, max_batch_size=30, seed=5)
  np.testing.assert_array_equal(a.batch(3)[0], b.batch(3)[0])
  with pytest.raises(ValueError, match="seed"):
    PoissonSampler(100, 0.1)
