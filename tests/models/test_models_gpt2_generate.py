"""GPT-2 generation: KV cache vs full recomputation, left padding, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax import models
from trustjax.models import GPT2Config
from trustjax.models import GPT2LMHeadModel

CFG = GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=2,
                 n_head=4)
N_NEW = 8


@pytest.fixture(scope="module")
def model():
  """Random weights large enough that greedy continuations vary."""
  m = GPT2LMHeadModel(CFG, rngs=nnx.Rngs(0))
  state = nnx.state(m, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.5 * jax.random.normal(k, x.shape)
            for x, k in zip(leaves, keys)]
  nnx.update(m, jax.tree.unflatten(treedef, leaves))
  return m


def _prompts():
  rs = np.random.RandomState(0)
  lengths = [6, 2, 4]
  p = max(lengths)
  ids = rs.randint(0, CFG.vocab_size, (3, p)).astype(np.int32)
  mask = np.zeros((3, p), bool)
  for i, n in enumerate(lengths):
    mask[i, p - n:] = True
  return ids, mask


def _uncached_greedy(model, ids, mask, n):
  """Reference: full forward over the whole sequence at every step (no
  cache). Not-yet-generated slots sit to the right with mask 0; causality
  keeps them out of the logits that are read."""
  b, p = ids.shape
  ids = np.concatenate([ids, np.zeros((b, n), np.int32)], 1)
  mask = np.concatenate([mask, np.zeros((b, n), bool)], 1)
  fwd = nnx.jit(lambda m, i, k: m(i, attention_mask=k))
  for step in range(n):
    logits = fwd(model, jnp.asarray(ids), jnp.asarray(mask))
    ids[:, p + step] = np.argmax(np.asarray(logits[:, p + step - 1]), -1)
    mask[:, p + step] = True
  return ids[:, p:]


def test_cached_greedy_equals_uncached_and_one_by_one(model):
  ids, mask = _prompts()
  got = np.asarray(models.generate(model, ids, mask, max_new_tokens=N_NEW,
                                   greedy=True))
  assert got.shape == (3, N_NEW) and got.dtype == np.int32
  np.testing.assert_array_equal(got, _uncached_greedy(model, ids, mask, N_NEW))
  assert len(np.unique(got)) > 3  # continuations are not all one token
  for i in range(3):
    alone = ids[i][mask[i]][None]
    np.testing.assert_array_equal(
        models.generate(model, alone, max_new_tokens=N_NEW, greedy=True)[0],
        got[i])


def test_sampling_is_a_function_of_the_key(model):
  ids, mask = _prompts()
  kw = dict(max_new_tokens=N_NEW, temperature=1.5, top_k=50, top_p=0.95)
  a = np.asarray(models.generate(model, ids, mask, key=jax.random.key(3), **kw))
  b = np.asarray(models.generate(model, ids, mask, key=jax.random.key(4), **kw))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(
      a, models.generate(model, ids, mask, key=jax.random.key(3), **kw))


def test_eos_stops_row(model):
  ids, mask = _prompts()
  free = np.asarray(models.generate(model, ids, mask, max_new_tokens=N_NEW,
                                    greedy=True))
  eos = int(free[0, 2])
  got = np.asarray(models.generate(model, ids, mask, max_new_tokens=N_NEW,
                                   greedy=True, eos_id=eos))
  for row_free, row in zip(free, got):
    hits = np.where(row_free == eos)[0]
    stop = hits[0] + 1 if hits.size else N_NEW
    np.testing.assert_array_equal(row[:stop], row_free[:stop])
    np.testing.assert_array_equal(row[stop:], eos)


def _filtered_support_and_probs(logits, temperature, top_k, top_p):
  """numpy reference of top-k then nucleus filtering."""
  z = logits / temperature
  keep = np.ones(len(z), bool)
  if top_k:
    keep &= z >= np.sort(z)[::-1][top_k - 1]
  z = np.where(keep, z, -np.inf)
  p = np.exp(z - z.max())
  p /= p.sum()
  if top_p < 1.0:
    order = np.argsort(-p, kind="stable")
    nucleus, total = [], 0.0
    for i in order:  # smallest prefix reaching mass top_p
      nucleus.append(i)
      total += p[i]
      if total >= top_p:
        break
    keep = np.zeros(len(z), bool)
    keep[nucleus] = True
    p = np.where(keep, p, 0.0)
    p /= p.sum()
  return p


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7),
    (2.0, 4, 0.8), (1.0, 0, 0.01)])
def test_sample_logits_distribution(temperature, top_k, top_p):
  logits = np.array([2.0, 1.0, 0.5, 0.4, -1.0, 0.0], np.float32)
  want = _filtered_support_and_probs(logits.astype(np.float64), temperature,
                                     top_k, top_p)
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  draw = jax.jit(jax.vmap(lambda k: models.sample_logits(
      jnp.asarray(logits)[None], k, temperature=temperature, top_k=top_k,
      top_p=top_p)[0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=len(logits))
  assert np.all(counts[want == 0] == 0)
  np.testing.assert_allclose(counts / n, want, atol=0.015)


def test_sample_logits_greedy_and_batched():
  logits = jnp.asarray([[0.0, 3.0, 1.0], [5.0, 1.0, 1.0]])
  np.testing.assert_array_equal(
      models.sample_logits(logits, None, greedy=True), [1, 0])
  np.testing.assert_array_equal(
      models.sample_logits(logits, jax.random.key(0), top_k=1), [1, 0])


def test_generate_input_errors(model):
  ids, mask = _prompts()
  with pytest.raises(ValueError, match=r"P=6 \+ max_new_tokens=27 = 33 "
                     r"exceeds n_positions=32"):
    models.generate(model, ids, mask, max_new_tokens=27, greedy=True)
  with pytest.raises(ValueError, match="not left-padded"):
    models.generate(model, ids, mask[:, ::-1], max_new_tokens=2, greedy=True)
  empty = mask.copy()
  empty[2] = False
  with pytest.raises(ValueError, match="row 2 has no real token"):
    models.generate(model, ids, empty, max_new_tokens=2, greedy=True)
  with pytest.raises(ValueError, match="needs key"):
    models.generate(model, ids, mask, max_new_tokens=2)
  with pytest.raises(ValueError, match="top_p=0.0"):
    models.generate(model, ids, mask, max_new_tokens=2,
                    key=jax.random.key(0), top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    models.generate(model, ids, mask, max_new_tokens=0, greedy=True)
