"""Transformer encoder text classifier in Flax NNX."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from trustjax.models._keys import dropout_key
from trustjax.models._keys import split_or_none
from trustjax.models.attention import SelfAttention
from trustjax.models.attention import attention_bias
from trustjax.models.dense import dense
from trustjax.models.pooling import masked_mean


class EncoderLayer(nnx.Module):
  """Pre-LN encoder block (Xiong et al., 2020).

  `x + Dropout(Attn(LN(x)))`, then `x + Dropout(W2 GELU(W1 LN(x)))`.
  """

  def __init__(self, d_model: int, num_heads: int, d_ff: int, *,
               dropout: float = 0.0, dtype=None, rngs: nnx.Rngs):
    self.ln1 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(d_model, num_heads, dtype=dtype, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.ff1 = nnx.Linear(d_model, d_ff, dtype=dtype, rngs=rngs)
    self.ff2 = nnx.Linear(d_ff, d_model, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, bias: jax.Array, *, key=None) -> jax.Array:
    """x[B,T,D], bias[B,1,1,T] from `attention_bias`; key None = no dropout."""
    k1, k2 = split_or_none(key, 2)
    y = self.attn(self.ln1(x), bias)
    x = x + self.dropout(y, deterministic=k1 is None, rngs=k1)
    y = dense(self.ff2, jax.nn.gelu(dense(self.ff1, self.ln2(x))))
    return x + self.dropout(y, deterministic=k2 is None, rngs=k2)


class TransformerClassifier(nnx.Module):
  """Token + learned position embeddings, pre-LN encoder, masked mean-pool.

  `__call__(ids[B,T], mask[B,T], *, inputs_embeds=None, deterministic=True,
  rngs=None) -> logits f32[B,num_classes]`.

  - `mask` (bool or 0/1) marks real tokens. Padded positions receive no
    attention and are left out of the mean-pool, so logits do not depend on
    the ids at padded positions. T may be anything up to `max_len`.
  - `inputs_embeds[B,T,d_model]` replaces the token-embedding lookup
    (position embeddings are still added); `ids` may then be None. With
    `inputs_embeds=model.embed(ids)` the output equals the ids path. This is
    the entry point for model inversion and prediction sensitivity
    (gradients with respect to input embeddings).
  - Dropout (embeddings, attention output, MLP output) is active only when
    `deterministic=False`, and then needs `rngs`: a jax key (or an
    `nnx.Rngs`), so a pure `loss_fn(params, batch, rng)` controls it.
  - `dtype` (e.g. jnp.bfloat16) sets the activation/matmul dtype; parameters
    stay float32, attention softmax, pooling and logits are float32.
  No layer mixes rows of the batch, so per-example gradients are well defined.
  """

  def __init__(self, vocab_size: int, num_classes: int, *, d_model: int = 128,
               num_layers: int = 2, num_heads: int = 4, d_ff: int = 512,
               max_len: int = 64, dropout: float = 0.0, dtype: Any = None,
               rngs: nnx.Rngs):
    for name, v in (("vocab_size", vocab_size), ("num_classes", num_classes),
                    ("d_model", d_model), ("num_layers", num_layers),
                    ("d_ff", d_ff), ("max_len", max_len)):
      if int(v) < 1:
        raise ValueError(
            f"TransformerClassifier: {name}={v} must be a positive integer")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(
          f"TransformerClassifier: dropout={dropout} must be in [0, 1)")
    self.max_len = int(max_len)
    self.d_model = int(d_model)
    self.dropout_rate = float(dropout)
    self.dtype = dtype
    self.token_embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
    self.pos_embed = nnx.Embed(
        max_len, d_model, embedding_init=nnx.initializers.normal(0.02),
        rngs=rngs)
    self.layers = nnx.List([
        EncoderLayer(d_model, num_heads, d_ff, dropout=dropout, dtype=dtype,
                     rngs=rngs) for _ in range(num_layers)])
    self.ln_f = nnx.LayerNorm(d_model, rngs=rngs)
    self.head = nnx.Linear(d_model, num_classes, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def embed(self, ids: jax.Array) -> jax.Array:
    """Token embeddings f32[B,T,d_model] (no position embedding)."""
    return self.token_embed(ids)

  def __call__(self, ids: jax.Array | None, mask: jax.Array, *,
               inputs_embeds: jax.Array | None = None,
               deterministic: bool = True, rngs: Any = None) -> jax.Array:
    x = self.embed(ids) if inputs_embeds is None else inputs_embeds
    if x.ndim != 3 or x.shape[-1] != self.d_model:
      raise ValueError(f"TransformerClassifier: embeddings have shape "
                       f"{x.shape}; expected [B, T, {self.d_model}]")
    t = x.shape[1]
    if t > self.max_len:
      raise ValueError(f"TransformerClassifier: sequence length {t} exceeds "
                       f"max_len={self.max_len}")
    if mask.shape != x.shape[:2]:
      raise ValueError(f"TransformerClassifier: mask shape {mask.shape} != "
                       f"[B, T] = {x.shape[:2]}")
    key = dropout_key(rngs, deterministic, self.dropout_rate,
                      "TransformerClassifier")
    key_emb, *layer_keys = split_or_none(key, len(self.layers) + 1)
    x = x + self.pos_embed.embedding[:t][None]
    if self.dtype is not None:
      x = x.astype(self.dtype)
    x = self.dropout(x, deterministic=key_emb is None, rngs=key_emb)
    bias = attention_bias(mask)
    for layer, k in zip(self.layers, layer_keys):
      x = layer(x, bias, key=k)
    pooled = masked_mean(self.ln_f(x.astype(jnp.float32)), mask)
    return self.head(pooled)
