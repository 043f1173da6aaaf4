"""GPT-2 against the PyTorch reference (transformers.GPT2LMHeadModel).

Both directions of the HF checkpoint format: a torch model's weights read by
`load_gpt2`, and `save_gpt2` output read by `from_pretrained`. All weights
(LayerNorms and biases included) are random so every tensor matters.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402

from trustjax import models  # noqa: E402

VOCAB = 500


@pytest.fixture(scope="module")
def torch_model():
  torch.set_num_threads(1)
  torch.manual_seed(0)
  hc = transformers.GPT2Config(
      vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
      embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
      bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
  tm = transformers.GPT2LMHeadModel(hc).eval()
  with torch.no_grad():
    for p in tm.parameters():
      p.add_(0.3 * torch.randn_like(p))
  return tm


def _inputs():
  rs = np.random.RandomState(0)
  ids = rs.randint(0, VOCAB, (3, 12))
  mask = np.ones((3, 12), np.int64)
  mask[1, :4] = 0  # left padded
  mask[2, 9:] = 0  # right padded
  pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
  return ids, mask, pos


def _torch_out(tm, ids, mask, pos):
  with torch.no_grad():
    return tm(torch.tensor(ids), attention_mask=torch.tensor(mask),
              position_ids=torch.tensor(pos), output_hidden_states=True)


def _assert_close_on_real(a, b, mask):
  m = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(a)[m], np.asarray(b)[m], atol=1e-4,
                             rtol=1e-4)


@pytest.mark.parametrize("layout", ["save_pretrained", "hub_state_dict"])
def test_load_torch_checkpoint_matches_torch(torch_model, tmp_path, layout):
  d = str(tmp_path)
  if layout == "save_pretrained":  # "transformer." prefix, no lm_head
    torch_model.save_pretrained(d)
  else:  # the Hub's gpt2 file: bare names plus buffers, and a tied head
    torch_model.config.to_json_file(os.path.join(d, "config.json"))
    sd = {k: v.contiguous() for k, v in
          torch_model.transformer.state_dict().items()}
    sd["lm_head.weight"] = torch_model.lm_head.weight.detach().clone()
    save_file(sd, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
  model = models.load_gpt2(d)
  assert model.config.n_layer == 2 and model.config.vocab_size == VOCAB
  ids, mask, pos = _inputs()
  ref = _torch_out(torch_model, ids, mask, pos)
  logits = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  assert np.abs(ref.logits.numpy()).max() > 1.0  # not a trivial comparison
  _assert_close_on_real(logits, ref.logits.numpy(), mask)
  hs = model.hidden_states(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                           all_layers=True)
  assert len(hs) == len(ref.hidden_states)
  for ours, theirs in zip(hs, ref.hidden_states):
    _assert_close_on_real(ours, theirs.numpy(), mask)


def test_save_gpt2_loads_in_transformers(torch_model, tmp_path):
  model = models.load_gpt2(_saved(torch_model, tmp_path / "a"))
  # Change the weights so the check cannot pass by reading the old files.
  model.h[1].mlp.c_fc.bias[...] = model.h[1].mlp.c_fc.bias[...] + 0.5
  model.ln_f.scale[...] = model.ln_f.scale[...] * 1.5
  out = str(tmp_path / "b")
  models.save_gpt2(model, out)
  tm, info = transformers.GPT2LMHeadModel.from_pretrained(
      out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert not info["mismatched_keys"]
  tm.eval()
  ids, mask, pos = _inputs()
  ref = _torch_out(tm, ids, mask, pos)
  logits = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  _assert_close_on_real(logits, ref.logits.numpy(), mask)
  old = _torch_out(torch_model, ids, mask, pos)
  assert not np.allclose(old.logits.numpy(), ref.logits.numpy(), atol=1e-3)


def _saved(tm, path):
  tm.save_pretrained(str(path))
  return str(path)
