"""Build a classifier from an ml_collections config (`config.model`)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from trustjax.models.bag import BagOfEmbeddings
from trustjax.models.mlp import MLP
from trustjax.models.transformer import TransformerClassifier

MODEL_NAMES = ("transformer", "bag", "mlp")

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _get(c: Any, name: str, default: Any) -> Any:
  value = c.get(name, default) if hasattr(c, "get") else getattr(
      c, name, default)
  return default if value is None else value


def build_model(model_config: Any, *, vocab_size: int, num_classes: int,
                rngs: nnx.Rngs, max_len: int | None = None) -> nnx.Module:
  """A model named by `model_config.name` in MODEL_NAMES, sized from its fields.

  Fields read (defaults in brackets):
    transformer: d_model [128], num_layers [2], num_heads [4], d_ff [512],
      max_len [the `max_len` argument, else 64], dropout [0.0],
      dtype ["float32"; or "bfloat16" activations, params stay f32].
    bag: d_embed [128], d_hidden [256], dropout [0.0], word_dropout [0.0],
      dtype.
    mlp: in_dim [vocab_size], hidden [(256,)], dtype; input is batch["x"].
  """
  name = _get(model_config, "name", None)
  if name not in MODEL_NAMES:
    raise ValueError(f"config.model.name={name!r} is unknown; valid: "
                     f"{', '.join(MODEL_NAMES)}")
  dtype_name = _get(model_config, "dtype", "float32")
  if dtype_name not in _DTYPES:
    raise ValueError(f"config.model.dtype={dtype_name!r} is unknown; valid: "
                     f"{', '.join(_DTYPES)}")
  dtype = _DTYPES[dtype_name]
  g = lambda k, d: _get(model_config, k, d)
  if name == "transformer":
    return TransformerClassifier(
        vocab_size, num_classes, d_model=g("d_model", 128),
        num_layers=g("num_layers", 2), num_heads=g("num_heads", 4),
        d_ff=g("d_ff", 512), max_len=g("max_len", max_len or 64),
        dropout=g("dropout", 0.0), dtype=dtype, rngs=rngs)
  if name == "bag":
    return BagOfEmbeddings(vocab_size, num_classes, d_embed=g("d_embed", 128),
                           d_hidden=g("d_hidden", 256),
                           dropout=g("dropout", 0.0),
                           word_dropout=g("word_dropout", 0.0), dtype=dtype,
                           rngs=rngs)
  return MLP(g("in_dim", vocab_size), tuple(g("hidden", (256,))), num_classes,
             dtype=dtype, rngs=rngs)
