"""Tests for trustjax.privacy.dp_vocab (Gaussian-threshold DP vocabulary)."""

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from trustjax.privacy import dp_vocab
from trustjax.privacy.dp_vocab import dp_vocabulary


def _texts(num_common_examples=400, seed=0):
  rng = np.random.default_rng(seed)
  common = ["the", "cat", "sat", "on", "mat", "book", "flight", "hotel"]
  texts = [" ".join(rng.choice(common, 5)) for _ in range(num_common_examples)]
  # Each rare word is held by exactly one example.
  texts += [f"book the secretword{i}" for i in range(200)]
  return texts


def test_common_words_survive_rare_words_do_not():
  res = dp_vocabulary(_texts(), epsilon=1.0, delta=1e-5,
                      max_words_per_example=4, seed=0)
  for w in ("the", "cat", "book", "flight"):
    assert w in res.words
  assert not any(w.startswith("secretword") for w in res.words)
  assert res.noisy_counts.shape == (len(res.words),)
  assert (np.diff(res.noisy_counts) <= 0).all()


def test_threshold_meets_single_example_release_bound():
  k, delta_t, s = 4, 5e-6, 3.0
  tau = dp_vocab.gaussian_threshold(s, k, delta_t)
  # P[some of k count-1 words released] == delta_t (independent reference).
  p_any = 1 - stats.norm.cdf((tau - 1) / s) ** k
  assert p_any == pytest.approx(delta_t, rel=1e-6)


def test_single_example_word_release_frequency():
  # Large delta so that the release probability is measurable: a word of
  # count 1 is released with probability 1 - (1 - delta_t)^(1/k).
  k, delta = 2, 0.2
  texts = ["alpha beta"] + ["common word"] * 50
  released = 0
  trials = 2000
  for seed in range(trials):
    res = dp_vocabulary(texts, epsilon=1.0, delta=delta,
                        max_words_per_example=k, seed=seed)
    released += "alpha" in res.words
  p = 1 - (1 - delta / 2) ** (1 / k)
  sd = math.sqrt(trials * p * (1 - p))
  assert abs(released - trials * p) < 5 * sd


def test_contributions_bounded():
  # One example with 50 distinct words, repeated in 300 examples: with k=3,
  # each example adds at most 3 counts, so total noisy mass ~ 300*3.
  words = [f"w{i}" for i in range(50)]
  texts = [" ".join(words)] * 300
  res = dp_vocabulary(texts, epsilon=2.0, delta=1e-5, max_words_per_example=3,
                      seed=1)
  total = res.noisy_counts.sum()
  noise_sd = res.noise_std * math.sqrt(len(res.words))
  assert total <= 900 + 5 * noise_sd
  assert res.noise_std == pytest.approx(
      math.sqrt(3) * float(dp_accounting.get_sigma_gaussian(2.0, 0.5e-5)),
      rel=1e-9)
  assert res.epsilon == 2.0 and res.delta == 1e-5


def test_dp_vocab_bad_inputs():
  with pytest.raises(ValueError, match="epsilon"):
    dp_vocabulary(["a"], epsilon=0.0, delta=1e-5, max_words_per_example=1,
                  seed=0)
  with pytest.raises(ValueError, match="delta"):
    dp_vocabulary(["a"], epsilon=1.0, delta=1.0, max_words_per_example=1,
                  seed=0)
  with pytest.raises(ValueError, match="max_words_per_example"):
    dp_vocabulary(["a"], epsilon=1.0, delta=1e-5, max_words_per_example=0,
                  seed=0)


def test_contribution_bounding_exact_with_tiny_noise():
  # epsilon huge -> noise std tiny: noisy counts are the bounded counts.
  words = [f"w{i}" for i in range(20)]
  texts = [" ".join(words)] * 200
  res = dp_vocabulary(texts, epsilon=500.0, delta=1e-5,
                      max_words_per_example=3, seed=2)
  assert res.noise_std < 0.07
  counts = np.round(res.noisy_counts)
  np.testing.assert_allclose(res.noisy_counts, counts, atol=0.3)
  assert counts.sum() == 600  # exactly k words per example
  assert set(res.words) == set(words)  # random subsets cover all words
