"""Counterfactual token fairness: exact zero for a gender-blind model."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax.data.vocab import WordVocab
from trustjax.fairness import cf_metrics as CF
from trustjax.models import BagOfEmbeddings

PAIRS = {"he": "she", "him": "her", "his": "her", "man": "woman",
         "father": "mother", "son": "daughter", "boy": "girl"}
SWAP = {**PAIRS, **{v: k for k, v in PAIRS.items() if k != "his"}}
GENDERED = set(SWAP)


def swap(text):
  """Tiny local swapper (lower-case whole words), independent of
  trustjax.fairness.counterfactual."""
  return re.sub(r"\b\w+\b", lambda m: SWAP.get(m.group(0), m.group(0)), text)


TEXTS = ["he is a doctor and his son is a nurse",
         "she met the engineer",
         "the boy thanked his mother",
         "a woman wrote the code",
         "the weather is nice today",
         "my father and the girl cooked dinner",
         "the team won the match",
         "her daughter studies law"]


def classifier_predict(vocab, seed=0):
  model = BagOfEmbeddings(len(vocab), 3, d_embed=16, d_hidden=16,
                          rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)

  @jax.jit
  def probs(state, ids, mask):
    return jax.nn.softmax(nnx.merge(graphdef, state)(ids, mask), -1)

  def predict(texts):
    ids, mask = vocab.encode(texts, 16)
    return probs(state, ids, mask)
  return predict


def test_gap_is_exactly_zero_for_a_model_blind_to_gendered_words():
  words = sorted({w for t in TEXTS for w in t.split()} - GENDERED)
  blind = WordVocab(words)            # gendered words -> <unk>, both sides
  r = CF.counterfactual_fairness(classifier_predict(blind), TEXTS,
                                 swap_fn=swap, groups=np.arange(8) % 2)
  assert r.num_changed == 6
  assert np.all(r.gaps == 0.0)
  assert r.mean == 0.0 and r.mean_changed == 0.0
  assert all(g["mean"] == 0.0 for g in r.per_group.values())


def test_gap_is_positive_when_the_model_sees_gendered_words():
  seeing = WordVocab(sorted({w for t in TEXTS + [swap(t) for t in TEXTS]
                             for w in t.split()}))
  r = CF.counterfactual_fairness(classifier_predict(seeing), TEXTS,
                                 swap_fn=swap)
  assert np.all(r.gaps[r.changed] > 0)
  assert np.all(r.gaps[~r.changed] == 0)   # unchanged texts: no gap
  assert r.mean_changed == pytest.approx(r.mean * 8 / 6)
  pre = CF.counterfactual_fairness(classifier_predict(seeing), TEXTS,
                                   swapped_texts=[swap(t) for t in TEXTS],
                                   batch_size=3)
  np.testing.assert_allclose(pre.gaps, r.gaps, rtol=1e-6)


def test_distances_match_numpy():
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(4), 10)
  q = rng.dirichlet(np.ones(4), 10)
  d = np.abs(p - q)
  for name, ref in (("tv", 0.5 * d.sum(1)), ("l1", d.sum(1)),
                    ("max", d.max(1)),
                    ("flip", (p.argmax(1) != q.argmax(1)).astype(float))):
    np.testing.assert_allclose(
        CF.counterfactual_gaps(jnp.asarray(p), jnp.asarray(q), distance=name),
        ref, rtol=1e-6)
  s, t = rng.random(10), rng.random(10)
  np.testing.assert_allclose(CF.counterfactual_gaps(
      jnp.asarray(s), jnp.asarray(t), distance="abs"), np.abs(s - t),
      rtol=1e-6)


def test_per_group_summaries_match_manual():
  gaps = np.array([0.1, 0.0, 0.3, 0.5, 0.0, 0.2])
  changed = np.array([1, 0, 1, 1, 0, 1], bool)
  groups = np.array(["f", "m", "f", "m", "m", "f"])
  r = CF.summarize_gaps(gaps, changed, groups)
  assert r.per_group["f"]["mean"] == pytest.approx(0.2)
  assert r.per_group["m"]["mean_changed"] == pytest.approx(0.5)
  assert r.per_group["m"]["num_changed"] == 1
  assert r.mean_changed == pytest.approx(np.mean([0.1, 0.3, 0.5, 0.2]))


def test_bad_inputs():
  f = lambda xs: np.zeros(len(xs))
  with pytest.raises(ValueError, match="exactly one"):
    CF.counterfactual_fairness(f, ["a"], distance="abs")
  with pytest.raises(ValueError, match="swapped_texts has 1"):
    CF.counterfactual_fairness(f, ["a", "b"], swapped_texts=["a"],
                               distance="abs")
  with pytest.raises(ValueError, match="needs probabilities"):
    CF.counterfactual_fairness(f, ["a"], swap_fn=swap)
  with pytest.raises(ValueError, match="float"):
    CF.summarize_gaps([0.0, 1.0], groups=[0.0, 1.0])
