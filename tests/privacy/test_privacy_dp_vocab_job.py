"""The tokenizer is part of the guarantee: DP vocabulary in the DP job.

Covers `data.tokenizer=dp_words` in trustjax/experiment/classification.py (a
`dp_vocabulary` release whose cost is composed into the job's epsilon), the
refusal of a private word vocabulary in a DP job, and the wording when the user
accepts one (`dp.allow_private_vocab=True`). Epsilons are checked against
dp_accounting called directly (independent of trustjax.privacy.accounting).
"""

import math
import os

import dp_accounting
from dp_accounting import dp_event as dpe
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
import pytest

from conftest import REPO_ROOT
from launch import common
from trustjax import privacy as tjp
from trustjax.data import synthetic_intents
from trustjax.data import WordVocab
from trustjax.experiment import classification
from trustjax.experiment import load_config


def _smoke(tokenizer: str):
  cfg = load_config(os.path.join(REPO_ROOT, "configs", "dp_clinc150.py"),
                    "smoke")
  cfg.data.name = "synthetic"
  cfg.data.tokenizer = tokenizer
  return cfg


def _reference_epsilon(z, sigma, q, steps, delta, threshold_delta,
                       accountant):
  """Vocabulary Gaussian(z) then `steps` Poisson-sampled Gaussian(sigma)
  steps, composed by dp_accounting at delta - threshold_delta, plus the
  -log(1 - threshold_delta) term of the threshold (dp_vocab's docstring)."""
  if accountant == "pld":
    acc = pld_privacy_accountant.PLDAccountant()
  else:
    acc = rdp_privacy_accountant.RdpAccountant()
  acc.compose(dpe.GaussianDpEvent(z))
  acc.compose(dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(sigma)),
              steps)
  return (acc.get_epsilon(delta - threshold_delta)
          - math.log1p(-threshold_delta))


def _vocab(cfg, n_texts=None):
  texts = synthetic_intents(seed=0).train.texts
  if n_texts:
    texts = texts[:n_texts]
  return classification.dp_word_vocab(cfg, texts)


# ----------------------------------------------------------------- refusal


def test_private_word_vocab_is_refused_in_a_dp_job():
  cfg = _smoke("word")
  with pytest.raises(ValueError, match="allow_private_vocab"):
    classification.validate_config(cfg)
  # The same vocabulary in a non-private job is fine.
  cfg.dp.enabled = False
  classification.validate_config(cfg)


def test_bad_dp_words_settings_are_refused():
  for field, value in (("vocab_epsilon", 0.0), ("vocab_delta_fraction", 1.0),
                       ("vocab_max_words", 0)):
    cfg = _smoke("dp_words")
    cfg.data[field] = value
    with pytest.raises(ValueError, match=f"data.{field}"):
      classification.validate_config(cfg)


def test_dp_words_without_its_release_is_refused():
  cfg = _smoke("dp_words")
  cfg.dp.noise_multiplier = 1.0
  with pytest.raises(ValueError, match="no vocabulary release"):
    classification.resolve_privacy(cfg, 600, 12)


def test_vocabulary_that_spends_the_whole_target_is_refused():
  cfg = _smoke("dp_words")
  cfg.data.vocab_epsilon = 20.0
  cfg.dp.target_epsilon = 2.0
  _, release = _vocab(cfg)
  with pytest.raises(ValueError, match="vocab_epsilon"):
    classification.resolve_privacy(cfg, 600, 12, vocab=release)


# ------------------------------------------------- composed epsilon (exact)


def test_composed_epsilon_and_accountant_target():
  event = dpe.ComposedDpEvent([
      dpe.GaussianDpEvent(3.0),
      dpe.SelfComposedDpEvent(
          dpe.PoissonSampledDpEvent(0.05, dpe.GaussianDpEvent(1.5)), 50)])
  acc = rdp_privacy_accountant.RdpAccountant()
  acc.compose(event)
  assert tjp.composed_epsilon(event, 1e-5, 0.0, accountant="rdp") == \
      pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
  assert tjp.composed_epsilon(event, 1e-5, 2e-6, accountant="rdp") == \
      pytest.approx(acc.get_epsilon(8e-6) - math.log1p(-2e-6), rel=1e-12)
  eps, delta = tjp.accountant_target(4.0, 1e-5, 2e-6)
  assert eps == pytest.approx(4.0 + math.log1p(-2e-6), rel=1e-15)
  assert delta == pytest.approx(8e-6, rel=1e-12)
  with pytest.raises(ValueError, match="threshold_delta"):
    tjp.accountant_target(4.0, 1e-5, 1e-5)
  with pytest.raises(ValueError, match="threshold_delta"):
    tjp.composed_epsilon(event, 1e-5, 2e-5)


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_composed_epsilon_equals_dp_accounting(accountant):
  cfg = _smoke("dp_words")
  cfg.dp.accountant = accountant
  cfg.dp.target_epsilon = None
  cfg.dp.noise_multiplier = 1.3
  cfg.dp.max_batch_size = 10 ** 6   # capped at n + 1: no truncation
  cfg.data.vocab_epsilon = 2.0
  n, steps = 600, 12
  _, release = _vocab(cfg, n)
  priv = classification.resolve_privacy(cfg, n, steps, vocab=release)
  delta = tjp.default_delta(n)
  # The vocabulary's own parameters, recomputed from the config.
  dv = cfg.data.vocab_delta_fraction * delta
  assert release.delta == pytest.approx(dv, rel=1e-12)
  z = dp_accounting.get_sigma_gaussian(2.0, dv / 2)
  assert release.gaussian_event == dpe.GaussianDpEvent(z)
  ref = _reference_epsilon(z, 1.3, cfg.batch_size / n, steps, delta, dv / 2,
                           accountant)
  assert priv.delta == delta and priv.threshold_delta == dv / 2
  assert priv.epsilon(steps) == pytest.approx(ref, rel=1e-9)
  # The vocabulary costs something: more than training alone at delta.
  train_only = tjp.epsilon(1.3, cfg.batch_size / n, steps, delta,
                           accountant=accountant)
  assert priv.epsilon(steps) > train_only


def test_target_epsilon_is_the_total():
  cfg = _smoke("dp_words")        # RDP, target epsilon 8
  cfg.dp.target_epsilon = 3.0
  cfg.dp.max_batch_size = 10 ** 6
  cfg.data.vocab_epsilon = 1.0
  n, steps = 600, 12
  _, release = _vocab(cfg, n)
  priv = classification.resolve_privacy(cfg, n, steps, vocab=release)
  sigma = priv.mechanism.noise_multiplier
  ref = _reference_epsilon(release.gaussian_event.noise_multiplier, sigma,
                           cfg.batch_size / n, steps, priv.delta,
                           release.threshold_delta, "rdp")
  assert ref <= 3.0 * (1 + 1e-9)
  assert ref >= 0.98 * 3.0
  # Training alone is calibrated below the total: it leaves room for the
  # vocabulary (a plain calibration would use the whole 3.0).
  plain = tjp.calibrate_noise(3.0, priv.delta, cfg.batch_size / n, steps,
                              accountant="rdp")
  assert sigma > plain * 1.01


# --------------------------------------------------------------- jobs


def test_dp_words_smoke_run(tmp_path):
  cfg = _smoke("dp_words")
  cfg.dp.max_batch_size = 10 ** 6   # capped at n + 1: no truncation
  cfg.data.max_examples = 300        # keeps those n + 1 rows per step cheap
  cfg.data.vocab_epsilon = 2.0
  s = classification.run(cfg, str(tmp_path / "run"))
  texts = synthetic_intents(seed=0).train.texts[:cfg.data.max_examples]
  _, release = classification.dp_word_vocab(cfg, texts)
  n = s["num_train_examples"]
  assert n == len(texts)
  ref = _reference_epsilon(release.gaussian_event.noise_multiplier,
                           s["noise_multiplier"], s["sampling_rate"],
                           s["steps"], s["delta"], release.threshold_delta,
                           "rdp")
  assert s["epsilon"] == pytest.approx(ref, rel=1e-9)
  assert s["epsilon"] <= 8.0 * (1 + 1e-9)
  assert s["vocab_words"] == len(release.words) > 0
  assert s["vocab_epsilon"] == 2.0
  assert "covers the DP word vocabulary" in s["privacy_note"]
  saved = WordVocab.load(str(tmp_path / "run" / "vocab.json"))
  assert saved.words[2:] == release.words
  assert 0.0 <= s["test_accuracy"] <= 1.0


def test_accepted_private_vocab_is_labelled(tmp_path, capsys):
  cfg = _smoke("word")
  cfg.dp.allow_private_vocab = True
  s = common.run_classification(cfg, str(tmp_path / "run"), False,
                                expect_dp=True)
  assert "does NOT cover the word vocabulary" in s["privacy_note"]
  printed = capsys.readouterr().out
  assert "does NOT cover the word vocabulary" in printed
  with open(tmp_path / "run" / "summary.json") as f:
    assert "does NOT cover the word vocabulary" in f.read()
