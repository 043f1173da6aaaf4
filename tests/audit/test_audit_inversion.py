"""White-box canary extraction: the optimiser on a model with a known answer,
then real memorisation by a classifier trained on CLINC150 with canaries."""

import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import data_dir_or_skip
from trustjax import audit
from trustjax import data as tjdata
from trustjax import models

PIN = "my pin code is {d} {d} {d} {d}"


class PositionalLinear(nnx.Module):
  """logits = sum_t onehot-ish embedding x_t @ W[t]: each position has its
  own preferred token, so the loss minimiser is known exactly."""

  def __init__(self, w):
    self.w = nnx.Param(jnp.asarray(w))              # [T, V, C]
    self.table = nnx.Param(jnp.eye(w.shape[1]))     # embeddings = one-hot

  def embed(self, ids):
    return self.table[...][ids]

  def __call__(self, ids, mask, *, inputs_embeds=None):
    x = self.embed(ids) if inputs_embeds is None else inputs_embeds
    x = x * mask[..., None]
    return jnp.einsum("btv,tvc->bc", x, self.w[...])


def make_known_model(secret_ids, vocab=14, length=8, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(0, 0.3, (length, vocab, 2))
  for pos, tok in secret_ids.items():
    w[pos, tok, 0] += 2.0          # the secret's token pushes label 0 up
  return PositionalLinear(w)


def test_inversion_finds_the_known_minimiser():
  vocab = tjdata.WordVocab.build(["my pin code is 0 1 2 3 4 5 6 7 8 9"],
                                 max_size=50)
  p = audit.CanaryPattern(PIN, label=0)
  ct = audit.tokenize_canary(p, vocab, 8)
  hits = 0
  for i, secret in enumerate(p.random_secrets(4, seed=5)):
    ids = {int(pos): int(ct.symbol_ids[j, s]) for j, (pos, s) in
           enumerate(zip(ct.slot_positions, secret))}
    model = make_known_model(ids, vocab=len(vocab), seed=i)
    # Without local search: the Gumbel-softmax relaxation alone.
    res = audit.invert_canary(model, ct, secret, key=jax.random.key(i),
                              num_restarts=4, num_steps=100, refine_sweeps=0)
    hits += res.success
    assert res.rank is not None and res.num_candidates == 10 ** 4
    assert res.random_success_rate == pytest.approx(1e-4)
    if res.success:
      assert res.rank == 1 and res.slot_accuracy == 1.0
      assert res.guess_text == p.secret_string(secret)
  assert hits == 4
  # Over the whole vocabulary (no knowledge that the secret is digits).
  full = audit.invert_canary(model, ct, secret, key=jax.random.key(9),
                             num_restarts=4, num_steps=150,
                             vocabulary="full", vocab_size=len(vocab))
  assert full.success and full.num_candidates == len(vocab) ** 4


def test_inversion_errors():
  vocab = tjdata.WordVocab.build(["my pin code is 0 1 2 3 4 5 6 7 8 9"],
                                 max_size=50)
  ct = audit.tokenize_canary(audit.CanaryPattern(PIN, 0), vocab, 8)
  model = make_known_model({4: 5}, vocab=len(vocab))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="num_restarts=0"):
    audit.invert_canary(model, ct, key=key, num_restarts=0)
  with pytest.raises(ValueError, match="tau_end"):
    audit.invert_canary(model, ct, key=key, tau_start=0.1, tau_end=1.0)
  with pytest.raises(ValueError, match="vocab_size"):
    audit.invert_canary(model, ct, key=key, vocabulary="full")
  # A pattern the tokenizer merges is refused before any optimisation.
  with pytest.raises(ValueError, match="splits canary pattern"):
    audit.tokenize_canary(audit.CanaryPattern(
        "my pin code is {d}{d}{d}{d}", 0), models.BPEEncoder(), 16)


def _train(ids, mask, labels, vocab_size, steps, seed=0):
  model = models.TransformerClassifier(
      vocab_size, 150, d_model=64, num_layers=1, num_heads=2, d_ff=128,
      max_len=ids.shape[1], rngs=nnx.Rngs(seed))
  gd, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(gd, rest=rest)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt, batch):
    loss, g = jax.value_and_grad(
        lambda p: jnp.mean(loss_fn(p, batch, None)[0]))(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  opt = tx.init(params)
  for t in range(steps):
    idx = np.random.default_rng([seed, t]).integers(0, len(labels), 64)
    params, opt, loss = step(params, opt, {"ids": ids[idx], "mask": mask[idx],
                                           "label": labels[idx]})
  return nnx.merge(gd, params, rest), float(loss)


def test_memorised_canaries_are_exposed_and_extracted():
  """2000 CLINC150 rows + 6 canaries x 16 repetitions (each its own intent:
  the secret is what tells them apart) + 6 never-inserted canaries, 400
  non-private steps. Recorded (2-core CPU, ~20 s CPU time): inserted
  exposure mean 12.8 bits (max log2 1e4 = 13.3), held-out 2.3; 4 of 6
  inserted secrets extracted exactly, 0 of 6 held-out (random guessing:
  1e-4 each)."""
  data_dir_or_skip("clinc150", "data_full.json")
  t0 = time.perf_counter()
  ds = tjdata.load_clinc150(None, include_oos=False)
  rng = np.random.default_rng(0)
  keep = rng.permutation(len(ds.train))[:2000]
  ds.train = tjdata.Split([ds.train.texts[i] for i in keep],
                          ds.train.labels[keep])
  pattern = audit.CanaryPattern(PIN, 0)
  cans = audit.make_canaries(pattern, [0, 16], per_count=6, seed=1,
                             labels=rng.choice(150, 12, replace=False))
  new, owner = audit.insert_canaries(ds, cans)
  vocab = tjdata.WordVocab.build(new.train.texts, max_size=8192)
  ids, mask = vocab.encode(new.train.texts, 16)
  model, loss = _train(ids, mask, new.train.labels, len(vocab), 400)
  assert loss < 0.2

  @jax.jit
  def cand_loss(ids, mask, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model(ids, mask),
                                                           labels)

  expo = {0: [], 16: []}
  hits = {0: 0, 16: 0}
  slot = {0: [], 16: []}
  for i, c in enumerate(cans):
    ct = audit.tokenize_canary(c.pattern, vocab, 16)
    losses = audit.candidate_losses(cand_loss, ct)
    expo[c.repetitions].append(audit.exposure(
        losses, int(pattern.secret_index(c.secret))))
    res = audit.invert_canary(model, ct, c.secret, key=jax.random.key(i),
                              num_restarts=8, num_steps=100)
    hits[c.repetitions] += res.success
    slot[c.repetitions].append(res.slot_accuracy)
  print({k: np.round(v, 2).tolist() for k, v in expo.items()}, hits,
        {k: np.mean(v) for k, v in slot.items()},
        f"{time.perf_counter() - t0:.1f}s")
  assert np.mean(expo[16]) > 9.0
  assert np.mean(expo[0]) < 5.0
  assert hits[16] >= 1          # P(>= 1 of 6 by guessing) < 1e-3
  assert hits[0] == 0
  assert np.mean(slot[16]) > np.mean(slot[0]) + 0.2


def test_causal_lm_canary_is_exposed_and_extracted():
  """A 1-layer GPT-2 trained on the canary (x8) among random-digit sentences
  of the same form: the secret gets the lowest log-perplexity and is
  extracted (the LM objective does not use the label). A word vocabulary
  keeps the output layer small (the GPT-2 BPE path is the same code)."""
  tok = tjdata.WordVocab.build(["my pin code is 0 1 2 3 4 5 6 7 8 9 ."],
                               max_size=50)
  p = audit.CanaryPattern("my pin code is {d} {d} {d} {d} .", label=0)
  ct = audit.tokenize_canary(p, tok, 12)
  secret = p.random_secrets(1, seed=3)[0]
  rng = np.random.default_rng(0)
  texts = [p.format(secret)] * 8 + [p.format(s) for s in
                                    rng.integers(0, 10, (24, 4))]
  ids, mask = tok.encode(texts, 12)
  cfg = models.GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=32,
                          n_layer=1, n_head=2)
  model = models.GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0))
  gd, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt):
    def loss(p):
      return jnp.mean(models.causal_lm_loss(nnx.merge(gd, p, rest)(
          ids, attention_mask=mask.astype(jnp.int32)), ids, mask))
    l, g = jax.value_and_grad(loss)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, l

  opt = tx.init(params)
  for _ in range(150):
    params, opt, l = step(params, opt)
  model = nnx.merge(gd, params, rest)
  losses = audit.candidate_losses(audit.canary_loss_fn(model, ct), ct)
  true = int(p.secret_index(secret))
  assert audit.exposure(losses, true) > 10
  res = audit.invert_canary(model, ct, secret, key=jax.random.key(0),
                            num_restarts=4, num_steps=100)
  assert res.success
  # Found from the greedy start (the last row); in this test the Gumbel
  # restarts alone end elsewhere (recorded: rank 7086 under their relaxed
  # distribution), see the helper's report.
  assert int(np.argmin(res.restart_losses)) == len(res.restart_losses) - 1
  other = audit.invert_canary(model, ct, p.random_secrets(2, 9)[1],
                              key=jax.random.key(1), num_restarts=4,
                              num_steps=100)
  assert not other.success
