"""GPT-2 in NNX: forward contracts, layer selection, LM loss, HF-format IO.

The PyTorch cross-check lives in test_models_gpt2_torch.py and generation in
test_models_gpt2_generate.py.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from trustjax import models
from trustjax.models import GPT2Config
from trustjax.models import GPT2LMHeadModel

CFG = GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2,
                 n_head=4)


def random_model(cfg=CFG, seed=0, scale=0.3):
  """A model whose every parameter (LayerNorms and biases too) is random."""
  model = GPT2LMHeadModel(cfg, rngs=nnx.Rngs(seed))
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape)
            for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def np_layer_norm(x, g, b, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * g + b


def np_gpt2_logits(model, ids):
  """Independent float64 numpy forward of one unpadded sequence ids[T]."""
  cfg = model.config
  p = lambda v: np.asarray(v[...], np.float64)
  t = len(ids)
  x = p(model.wte.embedding)[ids] + p(model.wpe.embedding)[:t]
  hd = cfg.n_embd // cfg.n_head
  for blk in model.h:
    h = np_layer_norm(x, p(blk.ln_1.scale), p(blk.ln_1.bias),
                      cfg.layer_norm_epsilon)
    qkv = h @ p(blk.attn.c_attn.kernel) + p(blk.attn.c_attn.bias)
    q, k, v = np.split(qkv, 3, axis=-1)
    out = np.zeros_like(q)
    for head in range(cfg.n_head):
      sl = slice(head * hd, (head + 1) * hd)
      s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
      s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
      a = np.exp(s - s.max(-1, keepdims=True))
      a /= a.sum(-1, keepdims=True)
      out[:, sl] = a @ v[:, sl]
    x = x + out @ p(blk.attn.c_proj.kernel) + p(blk.attn.c_proj.bias)
    h = np_layer_norm(x, p(blk.ln_2.scale), p(blk.ln_2.bias),
                      cfg.layer_norm_epsilon)
    u = h @ p(blk.mlp.c_fc.kernel) + p(blk.mlp.c_fc.bias)
    u = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    x = x + u @ p(blk.mlp.c_proj.kernel) + p(blk.mlp.c_proj.bias)
  x = np_layer_norm(x, p(model.ln_f.scale), p(model.ln_f.bias),
                    cfg.layer_norm_epsilon)
  return x @ p(model.wte.embedding).T


@pytest.fixture(scope="module")
def model():
  return random_model()


def test_config_hf_dict_round_trip_and_validation(tmp_path):
  cfg = CFG.replace(embd_pdrop=0.1, n_inner=48)
  assert GPT2Config.from_hf_dict(cfg.to_hf_dict()) == cfg
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"model_type": "gpt2", "n_ctx": 128,
                              "n_layer": 3, "activation_function":
                              "gelu_new"}))
  read = GPT2Config.from_json_file(str(path))
  assert (read.n_positions, read.n_layer, read.n_embd) == (128, 3, 768)
  assert read.embd_pdrop == 0.1  # HF's default for a missing field
  with pytest.raises(ValueError, match="n_head=5"):
    GPT2Config(n_embd=32, n_head=5)
  with pytest.raises(ValueError, match="activation_function='relu'"):
    GPT2Config.from_hf_dict({"activation_function": "relu"})


def test_logits_match_numpy_reference(model):
  ids = np.random.RandomState(0).randint(0, CFG.vocab_size, 11)
  got = np.asarray(model(jnp.asarray(ids)[None]))[0]
  np.testing.assert_allclose(got, np_gpt2_logits(model, ids), atol=1e-4,
                             rtol=1e-4)


def test_padding_masking_and_positions(model):
  rs = np.random.RandomState(1)
  ids = rs.randint(0, CFG.vocab_size, (1, 7))
  alone = np.asarray(model(jnp.asarray(ids)))
  # Left padding with default positions cumsum(mask)-1: same logits.
  pad_ids = np.concatenate([rs.randint(0, CFG.vocab_size, (1, 4)), ids], 1)
  mask = np.array([[0] * 4 + [1] * 7])
  left = np.asarray(model(jnp.asarray(pad_ids), attention_mask=mask))
  np.testing.assert_allclose(left[:, 4:], alone, atol=2e-5)
  # Right padding: real positions do not see the padded ids.
  r_ids = np.concatenate([ids, rs.randint(0, CFG.vocab_size, (1, 3))], 1)
  r_mask = np.array([[1] * 7 + [0] * 3])
  right = np.asarray(model(jnp.asarray(r_ids), attention_mask=r_mask))
  np.testing.assert_allclose(right[:, :7], alone, atol=2e-5)
  # Causality: appending tokens leaves earlier logits unchanged.
  np.testing.assert_allclose(
      np.asarray(model(jnp.asarray(r_ids)))[:, :7], alone, atol=2e-5)
  with pytest.raises(ValueError, match="exceeds n_positions=64"):
    model(jnp.zeros((1, 65), jnp.int32))


def test_inputs_embeds_hidden_states_and_head(model):
  ids = jnp.asarray(np.random.RandomState(2).randint(0, CFG.vocab_size,
                                                     (2, 6)))
  logits = model(ids)
  np.testing.assert_allclose(
      model(None, inputs_embeds=model.embed_tokens(ids)), logits, atol=1e-6)
  hs = model.hidden_states(ids, all_layers=True)
  assert len(hs) == CFG.n_layer + 1 and all(h.shape == (2, 6, 32) for h in hs)
  np.testing.assert_allclose(
      hs[0], model.embed_tokens(ids) + model.wpe.embedding[...][:6][None],
      atol=1e-6)
  np.testing.assert_allclose(model.hidden_states(ids), hs[-1], atol=0)
  np.testing.assert_allclose(hs[-1] @ model.wte.embedding[...].T, logits,
                             atol=1e-5)


def test_dropout_needs_key_and_is_random():
  m = random_model(CFG.replace(embd_pdrop=0.1, attn_pdrop=0.1,
                               resid_pdrop=0.1))
  ids = jnp.zeros((1, 5), jnp.int32)
  a = m(ids, deterministic=False, rngs=jax.random.key(0))
  b = m(ids, deterministic=False, rngs=jax.random.key(1))
  assert not np.allclose(a, b)
  np.testing.assert_allclose(
      a, m(ids, deterministic=False, rngs=jax.random.key(0)), atol=0)
  assert np.allclose(m(ids), m(ids, deterministic=True, rngs=jax.random.key(0)))
  with pytest.raises(ValueError, match="rngs"):
    m(ids, deterministic=False)


def test_select_layers_copies_chosen_blocks():
  teacher = random_model(CFG.replace(n_layer=4), seed=3)
  student = models.select_layers(teacher, range(0, 4, 2))
  assert student.config.n_layer == 2
  for j, i in enumerate([0, 2]):
    np.testing.assert_array_equal(student.h[j].mlp.c_fc.kernel[...],
                                  teacher.h[i].mlp.c_fc.kernel[...])
  np.testing.assert_array_equal(student.wte.embedding[...],
                                teacher.wte.embedding[...])
  # Same function as the teacher with blocks 1 and 3 removed.
  ids = np.arange(9) % CFG.vocab_size
  ref = GPT2LMHeadModel(CFG, rngs=nnx.Rngs(9))
  for name in ("wte", "wpe", "ln_f"):
    nnx.update(getattr(ref, name), nnx.state(getattr(teacher, name)))
  nnx.update(ref.h[0], nnx.state(teacher.h[0]))
  nnx.update(ref.h[1], nnx.state(teacher.h[2]))
  np.testing.assert_allclose(student(jnp.asarray(ids)[None])[0],
                             np_gpt2_logits(ref, ids), atol=1e-4, rtol=1e-4)
  # Copies, not views: changing the student leaves the teacher alone.
  student.wte.embedding[...] = student.wte.embedding[...] + 1.0
  assert not np.allclose(student.wte.embedding[...],
                         teacher.wte.embedding[...])
  with pytest.raises(ValueError, match=r"layer_ids \[4\]"):
    models.select_layers(teacher, [0, 4])


def test_causal_lm_loss_matches_python_loop():
  rs = np.random.RandomState(4)
  logits = rs.normal(size=(3, 5, 7)).astype(np.float32)
  ids = rs.randint(0, 7, (3, 5))
  mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
  got = np.asarray(models.causal_lm_loss(jnp.asarray(logits),
                                         jnp.asarray(ids), jnp.asarray(mask)))
  for b in range(3):
    terms = []
    for t in range(4):
      if mask[b, t] and mask[b, t + 1]:
        z = logits[b, t].astype(np.float64)
        lse = np.log(np.exp(z - z.max()).sum()) + z.max()
        terms.append(lse - z[ids[b, t + 1]])
    np.testing.assert_allclose(got[b], np.mean(terms), rtol=1e-5)
  no_mask = models.causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids))
  np.testing.assert_allclose(no_mask[0], got[0], rtol=1e-6)
  empty = models.causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids),
                                jnp.zeros((3, 5)))
  np.testing.assert_array_equal(empty, 0.0)


def test_save_load_round_trip_identical_logits(model, tmp_path):
  models.save_gpt2(model, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  with safe_open(str(tmp_path / "model.safetensors"), "numpy") as f:
    keys = set(f.keys())
    assert f.metadata() == {"format": "pt"}
    assert f.get_tensor("transformer.h.1.attn.c_attn.weight").shape == (32, 96)
  assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
  loaded = models.load_gpt2(str(tmp_path))
  assert loaded.config == model.config
  ids = jnp.asarray(np.random.RandomState(5).randint(0, CFG.vocab_size,
                                                     (2, 8)))
  np.testing.assert_array_equal(loaded(ids), model(ids))


def _rewrite(src, dst, edit):
  """Copies checkpoint src -> dst with tensors dict edited by `edit`."""
  os.makedirs(dst, exist_ok=True)
  with safe_open(os.path.join(src, "model.safetensors"), "numpy") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  tensors = edit(tensors)
  save_file(tensors, os.path.join(dst, "model.safetensors"),
            metadata={"format": "pt"})
  with open(os.path.join(src, "config.json")) as f:
    cfg = f.read()
  with open(os.path.join(dst, "config.json"), "w") as f:
    f.write(cfg)


def test_load_hub_layout_without_prefix_with_buffers_and_head(model, tmp_path):
  src = str(tmp_path / "src")
  models.save_gpt2(model, src, prefix="")
  def hub(t):  # the Hub's gpt2 file: no prefix, mask buffers, tied head
    t = dict(t)
    t["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    t["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    t["lm_head.weight"] = t["wte.weight"]
    return t
  _rewrite(src, str(tmp_path / "hub"), hub)
  ids = jnp.arange(6)[None]
  np.testing.assert_array_equal(models.load_gpt2(str(tmp_path / "hub"))(ids),
                                model(ids))
  def untied(t):
    t = dict(t)
    t["lm_head.weight"] = t["wte.weight"] + 1.0
    return t
  _rewrite(src, str(tmp_path / "untied"), untied)
  with pytest.warns(UserWarning, match="lm_head.weight.*ignored"):
    m2 = models.load_gpt2(str(tmp_path / "untied"))
  np.testing.assert_array_equal(m2(ids), model(ids))


def test_load_errors_name_file_and_entry(model, tmp_path):
  src = str(tmp_path / "src")
  models.save_gpt2(model, src)
  # Shape inconsistent with config.json.
  def wrong(t):
    t = dict(t)
    t["transformer.h.1.mlp.c_fc.weight"] = np.zeros((32, 100), np.float32)
    return t
  _rewrite(src, str(tmp_path / "wrong"), wrong)
  with pytest.raises(ValueError, match=r"model\.safetensors: entry "
                     r"'transformer\.h\.1\.mlp\.c_fc\.weight' has shape "
                     r"\(32, 100\).*implies \(32, 128\)"):
    models.load_gpt2(str(tmp_path / "wrong"))
  # config.json says fewer layers than the file holds.
  _rewrite(src, str(tmp_path / "extra"), lambda t: t)
  with open(tmp_path / "extra" / "config.json", "w") as f:
    json.dump(CFG.replace(n_layer=1).to_hf_dict(), f)
  with pytest.raises(ValueError, match=r"unexpected entries \['h\.1\."):
    models.load_gpt2(str(tmp_path / "extra"))
  # A tensor missing.
  _rewrite(src, str(tmp_path / "missing"),
           lambda t: {k: v for k, v in t.items() if "ln_f.bias" not in k})
  with pytest.raises(ValueError, match=r"missing 1 .*'ln_f\.bias'"):
    models.load_gpt2(str(tmp_path / "missing"))
  # Files missing.
  os.remove(tmp_path / "missing" / "model.safetensors")
  with pytest.raises(FileNotFoundError, match=r"missing/model\.safetensors"):
    models.load_gpt2(str(tmp_path / "missing"))
  os.remove(tmp_path / "missing" / "config.json")
  with pytest.raises(FileNotFoundError, match=r"missing/config\.json"):
    models.load_gpt2(str(tmp_path / "missing"))


def test_load_tokenizer_default_files_and_errors(tmp_path):
  vocab, merges = models.gpt2_vocab_files()
  for tok in (models.load_tokenizer(), models.load_tokenizer(vocab, merges)):
    assert tok.encode(" the cat's 123").ids == [262, 3797, 338, 17031]
  # A user's own (tiny) vocabulary, given as a directory.
  (tmp_path / "vocab.json").write_text(json.dumps(
      {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4}))
  (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n\u0120 ab\n")
  tok = models.load_tokenizer(str(tmp_path))
  assert tok.encode("ab ab").ids == [2, 4]
  assert tok.decode([2, 4]) == "ab ab"
  missing = str(tmp_path / "nope" / "merges.txt")
  with pytest.raises(FileNotFoundError, match="merges_txt file not found: "
                     + missing):
    models.load_tokenizer(vocab, missing)
  with pytest.raises(ValueError, match="both vocab_json and merges_txt"):
    models.load_tokenizer(vocab)


def test_pure_loss_fn_per_example_and_grad(model):
  """The trainer path: nnx.split, a pure per-example loss, jit and grad."""
  graphdef, params = nnx.split(model, nnx.Param)
  rs = np.random.RandomState(6)
  ids = jnp.asarray(rs.randint(0, CFG.vocab_size, (3, 7)))
  mask = jnp.asarray([[1] * 7, [0] * 2 + [1] * 5, [1] * 4 + [0] * 3])

  def loss_fn(p, ids, mask):
    m = nnx.merge(graphdef, p)
    return models.causal_lm_loss(m(ids, attention_mask=mask), ids, mask)

  batched = jax.jit(loss_fn)(params, ids, mask)
  single = jax.jit(jax.vmap(lambda i, k: loss_fn(params, i[None], k[None])[0]))
  np.testing.assert_allclose(single(ids, mask), batched, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, ids, mask).mean()))(params)
  g = grads["h"][0]["attn"]["c_attn"]["kernel"][...]
  assert g.shape == (32, 96) and np.all(np.isfinite(g)) and np.any(g != 0)
