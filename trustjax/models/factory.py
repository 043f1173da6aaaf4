"""Build a model from an ml_collections config (`config.model`)."""

from __future__ import annotations

from flax import nnx

from trustjax.models.classifiers import BagOfEmbeddings
from trustjax.models.classifiers import TransformerClassifier

MODEL_NAMES = ("bag", "transformer")


def build_model(model_config, *, vocab_size: int, num_classes: int,
                max_len: int = 64, rngs: nnx.Rngs):
  """`model_config.name` in MODEL_NAMES, with its size fields."""
  c = model_config
  if c.name == "bag":
    return BagOfEmbeddings(vocab_size, num_classes, d_embed=c.d_embed,
                           d_hidden=c.d_hidden, dropout=c.dropout, rngs=rngs)
  if c.name == "transformer":
    return TransformerClassifier(
        vocab_size, num_classes, d_model=c.d_model, num_layers=c.num_layers,
        num_heads=c.num_heads, d_ff=c.d_ff, max_len=max_len,
        dropout=c.dropout, rngs=rngs)
  raise ValueError(f"config.model.name={c.name!r} is unknown; valid: "
                   f"{', '.join(MODEL_NAMES)}")
