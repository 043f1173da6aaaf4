"""Bag-of-embeddings text classifier: the cheap, DP-friendly baseline."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from trustjax.models._keys import dropout_key
from trustjax.models.pooling import masked_mean, word_dropout_mask


class BagOfEmbeddings(nnx.Module):
  """Masked mean of token embeddings -> ReLU hidden layer -> linear head.

  Same call signature as `TransformerClassifier`:
  `__call__(ids[B,T], mask[B,T], *, inputs_embeds=None, deterministic=True,
  rngs=None) -> logits f32[B,num_classes]`. Padded positions (mask False) do
  not affect the output; `inputs_embeds[B,T,d_embed]` replaces the lookup
  (`inputs_embeds=model.embed(ids)` equals the ids path). Dropout on the
  hidden layer and word dropout are active only with `deterministic=False`
  and a key in `rngs`.

  `word_dropout` (Iyyer et al. 2015, "Deep Unordered Composition Rivals
  Syntactic Methods") leaves each real token out of the mean with this
  probability during training; an example that would lose every token keeps
  them all. Each example's drop pattern depends only on its row and the key,
  so per-example gradients (and DP clipping) stay per example.
  """

  def __init__(self, vocab_size: int, num_classes: int, *, d_embed: int = 128,
               d_hidden: int = 256, dropout: float = 0.0,
               word_dropout: float = 0.0, dtype: Any = None,
               rngs: nnx.Rngs):
    for name, v in (("vocab_size", vocab_size), ("num_classes", num_classes),
                    ("d_embed", d_embed), ("d_hidden", d_hidden)):
      if int(v) < 1:
        raise ValueError(
            f"BagOfEmbeddings: {name}={v} must be a positive integer")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"BagOfEmbeddings: dropout={dropout} must be in [0, 1)")
    if not 0.0 <= word_dropout < 1.0:
      raise ValueError(f"BagOfEmbeddings: word_dropout={word_dropout} must be "
                       "in [0, 1)")
    self.word_dropout = float(word_dropout)
    self.d_embed = int(d_embed)
    self.dropout_rate = float(dropout)
    self.token_embed = nnx.Embed(vocab_size, d_embed, rngs=rngs)
    self.hidden = nnx.Linear(d_embed, d_hidden, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(d_hidden, num_classes, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def embed(self, ids: jax.Array) -> jax.Array:
    """Token embeddings f32[B,T,d_embed]."""
    return self.token_embed(ids)

  def __call__(self, ids: jax.Array | None, mask: jax.Array, *,
               inputs_embeds: jax.Array | None = None,
               deterministic: bool = True, rngs: Any = None) -> jax.Array:
    x = self.embed(ids) if inputs_embeds is None else inputs_embeds
    if x.ndim != 3 or x.shape[-1] != self.d_embed:
      raise ValueError(f"BagOfEmbeddings: embeddings have shape {x.shape}; "
                       f"expected [B, T, {self.d_embed}]")
    if mask.shape != x.shape[:2]:
      raise ValueError(f"BagOfEmbeddings: mask shape {mask.shape} != "
                       f"[B, T] = {x.shape[:2]}")
    key = dropout_key(rngs, deterministic,
                      max(self.dropout_rate, self.word_dropout),
                      "BagOfEmbeddings")
    if key is not None and self.word_dropout > 0:
      word_key, key = jax.random.split(key)
      mask = word_dropout_mask(word_key, mask, self.word_dropout)
    h = jax.nn.relu(self.hidden(masked_mean(x, mask)))
    h = self.dropout(h, deterministic=key is None or self.dropout_rate == 0,
                     rngs=key)
    return self.head(h.astype(jnp.float32))
