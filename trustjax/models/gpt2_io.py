"""GPT-2 checkpoints in Hugging Face's format, from and to a local directory.

A directory holds `config.json` (HF `GPT2Config` fields) and
`model.safetensors` (or shards listed in `model.safetensors.index.json`) with
GPT-2's tensor names and shapes:

  wte.weight [V,D], wpe.weight [P,D], ln_f.weight/bias [D],
  h.{i}.ln_1.weight/bias [D], h.{i}.ln_2.weight/bias [D],
  h.{i}.attn.c_attn.weight [D,3D] (Conv1D: stored (in, out)), .bias [3D],
  h.{i}.attn.c_proj.weight [D,D], .bias [D],
  h.{i}.mlp.c_fc.weight [D,I], .bias [I],
  h.{i}.mlp.c_proj.weight [I,D], .bias [D]

with or without a `transformer.` prefix (the Hub's `gpt2` / `distilgpt2`
files have none; `GPT2LMHeadModel.save_pretrained` writes it). The causal-mask
buffers `attn.bias` / `attn.masked_bias` are ignored; `lm_head.weight`, when
present, is checked against `wte.weight` (GPT-2 ties them) and otherwise
ignored with a warning. Nothing is downloaded: point `load_gpt2` at a
directory you already have (e.g. a Hub snapshot).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import Any, Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from trustjax.models._hf import CONFIG_NAME
from trustjax.models._hf import WEIGHTS_NAME
from trustjax.models._hf import variable as _variable
from trustjax.models._hf import write_hf_checkpoint
from trustjax.models.gpt2 import GPT2Config
from trustjax.models.gpt2 import GPT2LMHeadModel

WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_PREFIX = "transformer."
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _entries(cfg: GPT2Config) -> Iterator[tuple[str, tuple, str,
                                                tuple[int, ...]]]:
  """(hf_name, module path, variable name, shape) of every GPT-2 tensor."""
  d, i3, inner = cfg.n_embd, 3 * cfg.n_embd, cfg.inner_dim
  yield "wte.weight", ("wte",), "embedding", (cfg.vocab_size, d)
  yield "wpe.weight", ("wpe",), "embedding", (cfg.n_positions, d)
  for layer in range(cfg.n_layer):
    p = f"h.{layer}."
    mod = ("h", layer)
    for ln in ("ln_1", "ln_2"):
      yield p + ln + ".weight", mod + (ln,), "scale", (d,)
      yield p + ln + ".bias", mod + (ln,), "bias", (d,)
    for sub, name, n_in, n_out in (("attn", "c_attn", d, i3),
                                   ("attn", "c_proj", d, d),
                                   ("mlp", "c_fc", d, inner),
                                   ("mlp", "c_proj", inner, d)):
      yield (f"{p}{sub}.{name}.weight", mod + (sub, name), "kernel",
             (n_in, n_out))
      yield f"{p}{sub}.{name}.bias", mod + (sub, name), "bias", (n_out,)
  yield "ln_f.weight", ("ln_f",), "scale", (d,)
  yield "ln_f.bias", ("ln_f",), "bias", (d,)


def _config_summary(cfg: GPT2Config) -> str:
  return (f"vocab_size={cfg.vocab_size}, n_positions={cfg.n_positions}, "
          f"n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, n_inner="
          f"{cfg.inner_dim}")


def _weight_files(directory: str) -> list[str]:
  single = os.path.join(directory, WEIGHTS_NAME)
  index = os.path.join(directory, WEIGHTS_INDEX_NAME)
  if os.path.exists(single):
    return [single]
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map", {})
    files = sorted(set(weight_map.values()))
    if not files:
      raise ValueError(f"{index}: no 'weight_map' entries")
    paths = [os.path.join(directory, name) for name in files]
    for p in paths:
      if not os.path.exists(p):
        raise FileNotFoundError(f"GPT-2 weights shard missing: {p} (listed "
                                f"in {index})")
    return paths
  others = [n for n in ("pytorch_model.bin", "tf_model.h5",
                        "flax_model.msgpack")
            if os.path.exists(os.path.join(directory, n))]
  hint = (f"; found only {others}: convert it to safetensors first" if others
          else "")
  raise FileNotFoundError(f"GPT-2 weights not found: {single} (nor "
                          f"{WEIGHTS_INDEX_NAME}){hint}")


def load_gpt2(directory: str) -> GPT2LMHeadModel:
  """Reads a HF-format GPT-2 checkpoint directory into a GPT2LMHeadModel.

  Raises FileNotFoundError naming the missing file, and ValueError naming the
  file and entry when a tensor is missing, unexpected, or has a shape that
  does not match config.json. Parameters are converted to float32.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"load_gpt2: {directory} is not a directory")
  config_path = os.path.join(directory, CONFIG_NAME)
  cfg = GPT2Config.from_json_file(config_path)
  files = _weight_files(directory)
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  # name (prefix stripped) -> (file, stored name, shape).
  found: dict[str, tuple[str, str, tuple[int, ...]]] = {}
  for path in files:
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if name in found:
          raise ValueError(f"{path}: entry '{key}' duplicates "
                           f"'{found[name][1]}' in {found[name][0]}")
        found[name] = (path, key, tuple(f.get_slice(key).get_shape()))

  expected = {name: (mod, var, shape)
              for name, mod, var, shape in _entries(cfg)}
  missing = [n for n in expected if n not in found]
  if missing:
    raise ValueError(f"{files[0]}: missing {len(missing)} GPT-2 entries "
                     f"required by {config_path} ({_config_summary(cfg)}), "
                     f"e.g. {missing[:4]}")
  unexpected = [n for n in found if n not in expected and n != "lm_head.weight"
                and not n.endswith(_IGNORED_SUFFIXES)]
  if unexpected:
    raise ValueError(f"{found[unexpected[0]][0]}: unexpected entries "
                     f"{sorted(unexpected)[:6]} for {config_path} "
                     f"({_config_summary(cfg)})")
  for name, (_, _, shape) in expected.items():
    path, key, got = found[name]
    if got != shape:
      raise ValueError(f"{path}: entry '{key}' has shape {got}, but "
                       f"{config_path} ({_config_summary(cfg)}) implies "
                       f"{shape}")
  if "lm_head.weight" in found:
    path, key, got = found["lm_head.weight"]
    if got != expected["wte.weight"][2]:
      raise ValueError(f"{path}: entry '{key}' has shape {got}; the tied LM "
                       "head must have wte's shape "
                       f"{expected['wte.weight'][2]}")

  model = nnx.eval_shape(lambda: GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0)))
  with contextlib.ExitStack() as stack:
    handles = {p: stack.enter_context(safe_open(p, framework="numpy"))
               for p in files}
    for name, (mod, var, _) in expected.items():
      path, key, _ = found[name]
      arr = handles[path].get_tensor(key).astype(np.float32)
      _variable(model, mod, var).set_value(jnp.asarray(arr))
    if "lm_head.weight" in found:
      path, key, _ = found["lm_head.weight"]
      head = handles[path].get_tensor(key).astype(np.float32)
      if not np.array_equal(head, np.asarray(model.wte.embedding[...])):
        warnings.warn(
            f"{path}: entry '{key}' differs from wte.weight; GPT-2 ties the "
            "LM head to the token embedding, so lm_head.weight is ignored "
            "and logits use wte.weight", stacklevel=2)
  return model


def save_gpt2(model: GPT2LMHeadModel, directory: str, *,
              prefix: str = _PREFIX) -> None:
  """Writes `config.json` + `model.safetensors` (float32) in HF's format.

  Tensor names carry `prefix` ("transformer." by default, as
  `transformers.GPT2LMHeadModel.save_pretrained` writes them; pass "" for
  the Hub's `gpt2` layout). The tied `lm_head.weight` is not written.
  `transformers.GPT2LMHeadModel.from_pretrained(directory)` and `load_gpt2`
  both read the result. Existing files of those names are overwritten.
  """
  if not isinstance(model, GPT2LMHeadModel):
    raise ValueError(f"save_gpt2: model must be a GPT2LMHeadModel, got "
                     f"{type(model).__name__}")
  cfg = model.config
  tensors: dict[str, Any] = {}
  for name, mod, var, shape in _entries(cfg):
    arr = np.asarray(_variable(model, mod, var)[...], np.float32)
    if arr.shape != shape:
      raise ValueError(f"save_gpt2: {name} has shape {arr.shape}; config "
                       f"({_config_summary(cfg)}) implies {shape}")
    tensors[prefix + name] = arr
  write_hf_checkpoint(directory, tensors, cfg.to_hf_dict())
