"""Distillation loss and teacher prediction perturbation vs numpy loops."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trustjax import distill

V = 7
# Involution on 7 ids: 1<->2 ("he"/"she"), 3<->5; 0, 4, 6 neutral.
PERM = np.array([0, 2, 1, 5, 4, 3, 6], np.int32)


def _softmax(x, t=1.0):
  z = np.exp((x - x.max(-1, keepdims=True)) / t)
  return z / z.sum(-1, keepdims=True)


def test_distillation_loss_matches_loop():
  rng = np.random.default_rng(0)
  b, t, temp = 3, 5, 2.0
  s = rng.normal(size=(b, t, V)).astype(np.float32)
  tl = rng.normal(size=(b, t, V)).astype(np.float32)
  ids = rng.integers(0, V, size=(b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)
  mask[1, 3:] = False
  mask[2, :] = False
  loss, aux = distill.distillation_loss(
      jnp.asarray(s), jnp.asarray(ids), jnp.asarray(mask),
      jax.nn.log_softmax(jnp.asarray(tl) / temp, -1), temperature=temp,
      alpha_kd=0.3, alpha_ce=0.7)
  ces, kds = [], []
  for i in range(b):
    for j in range(t - 1):
      if mask[i, j] and mask[i, j + 1]:
        ps = _softmax(s[i, j].astype(np.float64))
        ces.append(-np.log(ps[ids[i, j + 1]]))
        p, qs = _softmax(tl[i, j].astype(np.float64), temp), _softmax(
            s[i, j].astype(np.float64), temp)
        kds.append(temp ** 2 * np.sum(p * np.log(p / qs)))
  assert float(aux["num_tokens"]) == len(ces) == 4 + 2
  np.testing.assert_allclose(float(aux["ce"]), np.mean(ces), rtol=1e-5)
  np.testing.assert_allclose(float(aux["kd"]), np.mean(kds), rtol=1e-5)
  np.testing.assert_allclose(float(loss),
                             0.3 * np.mean(kds) + 0.7 * np.mean(ces),
                             rtol=1e-5)
  # No teacher: plain LM loss.
  loss_lm, _ = distill.distillation_loss(jnp.asarray(s), jnp.asarray(ids),
                                         jnp.asarray(mask), None,
                                         alpha_ce=1.0)
  np.testing.assert_allclose(float(loss_lm), np.mean(ces), rtol=1e-5)


def _ref_combine(p, p_cf, perm, method):
  mapped = np.array([p_cf[perm[j]] for j in range(len(p))])
  if method == "max":
    c = np.maximum(p, mapped)
  elif method == "mean":
    c = (p + mapped) / 2
  else:
    c = np.sqrt(p * mapped)
  return c / c.sum()


@pytest.mark.parametrize("method", distill.METHODS)
def test_combine_matches_reference(method):
  rng = np.random.default_rng(1)
  lp = rng.normal(size=(4, V))
  lc = rng.normal(size=(4, V))
  out = np.exp(np.asarray(distill.combine_logprobs(
      jax.nn.log_softmax(jnp.asarray(lp)), jax.nn.log_softmax(jnp.asarray(lc)),
      PERM, method)))
  for i in range(4):
    ref = _ref_combine(_softmax(lp[i]), _softmax(lc[i]), PERM, method)
    np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-7)


def _teacher(ids):
  """A fixed toy 'teacher': logits depend on the whole prefix (cumsum)."""
  w = jnp.asarray(np.random.default_rng(2).normal(size=(V, V)), jnp.float32)
  emb = jax.nn.one_hot(ids, V) @ w
  return jnp.cumsum(emb, axis=1) + 0.3 * emb


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(st.lists(st.integers(0, V - 1), min_size=6, max_size=6),
                  st.sampled_from(distill.METHODS),
                  st.floats(0.5, 3.0))
def test_perturbation_properties(tokens, method, temp):
  ids = jnp.asarray([tokens, [0, 4, 6, 0, 4, 6]], jnp.int32)
  mask = jnp.ones(ids.shape, bool)
  cf = distill.counterfactual_ids(ids, PERM)
  logq = distill.perturbed_teacher_logprobs(
      _teacher(ids), _teacher(cf), ids, mask, PERM, method, temp)
  q = np.exp(np.asarray(logq, np.float64))
  np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
  base = np.exp(np.asarray(jax.nn.log_softmax(_teacher(ids) / temp, -1)))
  # Row 1 has no gendered token: exactly the teacher's distribution.
  np.testing.assert_allclose(q[1], base[1], rtol=1e-6)
  # Row 0: positions before the first gendered token are untouched.
  gendered = PERM[np.asarray(tokens)] != np.asarray(tokens)
  first = int(np.argmax(gendered)) if gendered.any() else len(tokens)
  np.testing.assert_allclose(q[0, :first], base[0, :first], rtol=1e-6)
  for t in range(first, len(tokens)):
    pc = np.exp(np.asarray(jax.nn.log_softmax(_teacher(cf) / temp, -1)))
    np.testing.assert_allclose(
        q[0, t], _ref_combine(base[0, t], pc[0, t], PERM, method),
        rtol=2e-5, atol=1e-7)
  # Symmetry under the swap at gendered positions (elsewhere q is the
  # teacher's own distribution): q(perm x)[perm j] == q(x)[j].
  logq_sw = distill.perturbed_teacher_logprobs(
      _teacher(cf), _teacher(ids), cf, mask, PERM, method, temp)
  q_sw = np.exp(np.asarray(logq_sw, np.float64))
  np.testing.assert_allclose(q_sw[0, first:][..., PERM], q[0, first:],
                             rtol=2e-5, atol=1e-7)


def test_gendered_context_ignores_padding():
  ids = jnp.asarray([[0, 4, 1, 6, 3]], jnp.int32)
  mask = jnp.asarray([[1, 1, 0, 0, 0]], bool)   # the gendered 1 is padding
  g = distill.gendered_context(ids, PERM, mask)
  assert not bool(g.any())
  g = distill.gendered_context(ids, PERM, None)
  np.testing.assert_array_equal(np.asarray(g[0]), [0, 0, 1, 1, 1])
  with pytest.raises(ValueError, match="method"):
    distill.combine_logprobs(jnp.zeros((1, V)), jnp.zeros((1, V)), PERM,
                             "median")


def test_remapped_tokenizer_round_trip(tmp_path):
  """A distillation model dir's tokenizer speaks its small ids."""
  import json
  import numpy as np
  from trustjax.distill.corpus import CorpusVocab, RemappedTokenizer
  from trustjax.distill.corpus import tokenizer_for_model
  from trustjax.models import gpt2_tokenizer
  base = gpt2_tokenizer()
  text = "She said he was a doctor."
  g = base.encode(text).ids
  vocab = CorpusVocab([50256, -1] + sorted(set(g)))
  tok = RemappedTokenizer(base, vocab)
  enc = tok.encode(text)
  assert max(enc.ids) < len(vocab) and min(enc.ids) >= 2
  np.testing.assert_array_equal(vocab.to_gpt2(enc.ids), g)
  assert tok.decode(enc.ids) == text
  assert tok.encode("zebra quagga").ids.count(1) >= 1   # out of vocab: UNK
  run = tmp_path / "run"
  (run / "model").mkdir(parents=True)
  with open(run / "vocab.json", "w") as f:
    json.dump({"gpt2_ids": vocab.to_json()}, f)
  assert isinstance(tokenizer_for_model(str(run / "model"), base),
                    RemappedTokenizer)
  assert tokenizer_for_model(str(tmp_path), base) is base
