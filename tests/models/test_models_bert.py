"""BERT encoder and sentence embeddings against the PyTorch reference.

References: `transformers.BertModel` (a tiny random one, all weights
perturbed so every tensor matters; and the packaged all-MiniLM-L6-v2) and
HF's `AutoTokenizer` for token ids. Both directions of the checkpoint format
are checked: a torch model's files read by `load_bert`, and `save_bert`
output read by `BertModel.from_pretrained`.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import nnx  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from trustjax import models  # noqa: E402

VOCAB = 100


@pytest.fixture(scope="module")
def torch_model():
  torch.set_num_threads(1)
  torch.manual_seed(0)
  hc = transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=48, max_position_embeddings=40,
      type_vocab_size=2, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  tm = transformers.BertModel(hc).eval()
  with torch.no_grad():
    for p in tm.parameters():
      p.add_(0.3 * torch.randn_like(p))
  return tm


def _inputs():
  rs = np.random.RandomState(0)
  ids = rs.randint(0, VOCAB, (3, 12))
  types = rs.randint(0, 2, (3, 12))
  mask = np.ones((3, 12), np.int64)
  mask[1, 5:] = 0  # right padded
  mask[2, 11:] = 0
  return ids, mask, types


def _torch_hidden(tm, ids, mask, types):
  with torch.no_grad():
    return tm(torch.tensor(ids), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(types)).last_hidden_state.numpy()


def _ours(model, ids, mask, types):
  return np.asarray(model(jnp.asarray(ids), jnp.asarray(mask),
                          jnp.asarray(types)))


def _assert_close_on_real(a, b, mask, tol=1e-5):
  m = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(a)[m], np.asarray(b)[m], atol=tol,
                             rtol=tol)


@pytest.mark.parametrize("layout", ["save_pretrained", "prefixed"])
def test_load_torch_checkpoint_matches_torch(torch_model, tmp_path, layout):
  d = str(tmp_path)
  if layout == "save_pretrained":
    torch_model.save_pretrained(d)
  else:  # BertForPreTraining-style names, plus the buffers and heads to skip
    torch_model.config.to_json_file(os.path.join(d, "config.json"))
    sd = {"bert." + k: v.contiguous()
          for k, v in torch_model.state_dict().items()}
    sd["bert.embeddings.position_ids"] = torch.arange(40)[None]
    sd["cls.predictions.bias"] = torch.zeros(VOCAB)
    save_file(sd, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
  model = models.load_bert(d)
  assert model.config.num_hidden_layers == 2
  assert model.config.vocab_size == VOCAB
  ids, mask, types = _inputs()
  ref = _torch_hidden(torch_model, ids, mask, types)
  ours = _ours(model, ids, mask, types)
  assert ours.shape == ref.shape == (3, 12, 32)
  _assert_close_on_real(ours, ref, mask)
  # Ids at padded positions do not reach real positions.
  ids2 = np.where(mask.astype(bool), ids, (ids + 7) % VOCAB)
  _assert_close_on_real(_ours(model, ids2, mask, types), ours, mask, 1e-6)
  # token_type_ids=None means all zeros, as in HF.
  zeros = np.zeros_like(types)
  _assert_close_on_real(
      model(jnp.asarray(ids), jnp.asarray(mask.astype(bool))),
      _torch_hidden(torch_model, ids, mask, zeros), mask)


def test_save_bert_round_trip_and_transformers(torch_model, tmp_path):
  torch_model.save_pretrained(str(tmp_path / "a"))
  model = models.load_bert(str(tmp_path / "a"))
  # Change the weights so the check cannot pass by reading the old files.
  model.layers[1].intermediate.bias[...] += 0.5
  model.layers[0].attention.out.kernel[...] *= 1.5
  model.embeddings.layer_norm.scale[...] *= 0.7
  out = str(tmp_path / "b")
  models.save_bert(model, out)
  back = models.load_bert(out)
  assert back.config == model.config
  jax.tree.map(np.testing.assert_array_equal, nnx.state(back, nnx.Param),
               nnx.state(model, nnx.Param))
  tm, info = transformers.BertModel.from_pretrained(
      out, output_loading_info=True)
  assert not info["unexpected_keys"] and not info["mismatched_keys"]
  assert all(k.startswith("pooler.") for k in info["missing_keys"])
  tm.eval()
  ids, mask, types = _inputs()
  ref = _torch_hidden(tm, ids, mask, types)
  _assert_close_on_real(_ours(model, ids, mask, types), ref, mask)
  old = _torch_hidden(torch_model, ids, mask, types)
  assert not np.allclose(old, ref, atol=1e-3)


def _write_checkpoint(path, cfg=None):
  cfg = cfg or models.BertConfig(vocab_size=VOCAB, hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=24,
                                 max_position_embeddings=16)
  models.save_bert(models.BertEncoder(cfg, rngs=nnx.Rngs(0)), str(path))
  return str(path)


def _edit_config(d, **changes):
  """Rewrites d/config.json with `changes` applied."""
  path = os.path.join(d, "config.json")
  with open(path) as f:
    hc = json.load(f)
  hc.update(changes)
  with open(path, "w") as f:
    json.dump(hc, f)


def test_load_bert_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    models.load_bert(str(tmp_path / "nowhere"))
  d = _write_checkpoint(tmp_path / "ok")
  os.remove(os.path.join(d, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    models.load_bert(d)
  d = _write_checkpoint(tmp_path / "shape")
  _edit_config(d, intermediate_size=32)
  with pytest.raises(ValueError, match=r"encoder\.layer\.0\.intermediate\."
                     r"dense\.weight.*\(24, 16\).*\(32, 16\)"):
    models.load_bert(d)
  _edit_config(d, model_type="roberta")
  with pytest.raises(ValueError, match="model_type='roberta'"):
    models.load_bert(d)
  d = _write_checkpoint(tmp_path / "extra",
                        models.BertConfig(vocab_size=VOCAB, hidden_size=16,
                                          num_hidden_layers=2,
                                          num_attention_heads=2,
                                          intermediate_size=24,
                                          max_position_embeddings=16))
  _edit_config(d, num_hidden_layers=1)
  with pytest.raises(ValueError, match=r"unexpected entries.*encoder\.layer"
                     r"\.1\."):
    models.load_bert(d)
  _edit_config(d, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"missing 16 BERT entries"):
    models.load_bert(d)


def test_config_and_input_validation():
  d = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=24, vocab_size=VOCAB, hidden_dropout_prob=0.1,
           use_cache=True, architectures=["BertModel"])
  cfg = models.BertConfig.from_dict(d)
  assert cfg.hidden_size == 16 and cfg.max_position_embeddings == 512
  assert models.BertConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="hidden_act='relu'"):
    models.BertConfig.from_dict(dict(d, hidden_act="relu"))
  with pytest.raises(ValueError, match="multiple of num_attention_heads=3"):
    models.BertConfig(hidden_size=16, num_attention_heads=3)
  model = models.BertEncoder(cfg.replace(max_position_embeddings=8),
                             rngs=nnx.Rngs(0))
  ids = jnp.zeros((2, 5), jnp.int32)
  with pytest.raises(ValueError, match=r"ids has shape \(5,\)"):
    model(ids[0], jnp.ones((5,)))
  with pytest.raises(ValueError, match=r"mask shape \(2, 4\)"):
    model(ids, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=r"token_type_ids shape \(5,\)"):
    model(ids, jnp.ones((2, 5)), jnp.zeros((5,), jnp.int32))
  with pytest.raises(ValueError, match="max_position_embeddings=8"):
    model(jnp.zeros((1, 9), jnp.int32), jnp.ones((1, 9)))


def test_bucket_length():
  for max_len in (16, 128, 512):
    got = [models.bucket_length(n, max_len) for n in range(1, max_len + 1)]
    assert all(n <= b <= max_len for n, b in zip(range(1, max_len + 1), got))
    assert len(set(got)) <= 11
  assert [models.bucket_length(n, 128) for n in (1, 9, 17, 33, 65, 128)] == [
      4, 12, 24, 48, 128, 128]
  assert models.bucket_length(30, 16) == 16


# --- all-MiniLM-L6-v2, when its package is installed ---------------------

SENTENCES = [
    "what is my checking account balance",
    "Hi!",
    "Please transfer $250.00 from savings to my checking account before "
    "Friday, and remind me when it's done.",
    "how do you say 'thank you' in japanese",
    "",
    "Is the Café Müller open on Sundays?",
    "book a table for two at 7pm",
    "tell me a joke " * 40,  # truncated
]


@pytest.fixture(scope="module")
def minilm():
  try:
    path = models.minilm_path()
  except (ImportError, FileNotFoundError) as e:
    pytest.skip(f"all-MiniLM-L6-v2 not installed ({e})")
  model, tok = models.load_sentence_encoder(path)
  return path, model, tok


def test_minilm_matches_sentence_transformers_recipe(minilm):
  path, model, tok = minilm
  torch.set_num_threads(1)
  hf_tok = transformers.AutoTokenizer.from_pretrained(path)
  tm = transformers.BertModel.from_pretrained(path).eval()
  max_len = 64
  enc = hf_tok(SENTENCES, padding=True, truncation=True, max_length=max_len,
               return_tensors="np")
  ids, mask = tok.encode(SENTENCES, max_len)
  np.testing.assert_array_equal(ids, enc["input_ids"])
  np.testing.assert_array_equal(mask, enc["attention_mask"].astype(bool))
  assert ids.dtype == np.int32 and mask.dtype == bool
  with torch.no_grad():
    h = tm(torch.tensor(enc["input_ids"]),
           attention_mask=torch.tensor(enc["attention_mask"])
           ).last_hidden_state
    m = torch.tensor(enc["attention_mask"])[..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), p=2,
                                        dim=1).numpy()
  # batch_size=3: several sorted batches of different padded lengths, so a
  # row landing in the wrong place would show.
  emb = models.sentence_embeddings(model, tok, SENTENCES, batch_size=3,
                                   max_len=max_len)
  assert emb.shape == (len(SENTENCES), 384) and emb.dtype == np.float32
  np.testing.assert_allclose(emb, ref, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  one = models.sentence_embeddings(model, tok, SENTENCES[2:3],
                                   max_len=max_len)
  np.testing.assert_allclose(one[0], emb[2], atol=1e-5)
  raw = models.sentence_embeddings(model, tok, SENTENCES[:2], max_len=max_len,
                                   normalize=False)
  np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1,
                                                  keepdims=True),
                             emb[:2], atol=1e-5)


def test_sentence_embeddings_validation(minilm, tmp_path):
  _, model, tok = minilm
  assert models.sentence_embeddings(model, tok, []).shape == (0, 384)
  with pytest.raises(ValueError, match="single string"):
    models.sentence_embeddings(model, tok, "hello")
  with pytest.raises(ValueError, match=r"texts\[1\] is a int"):
    tok.encode(["a", 3])
  with pytest.raises(ValueError, match="max_len=1000"):
    models.sentence_embeddings(model, tok, ["a"], max_len=1000)
  with pytest.raises(ValueError, match="max_len=2"):
    tok.encode(["a"], max_len=2)
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    models.WordPieceEncoder(str(tmp_path))
