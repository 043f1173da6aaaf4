"""Multi-head self-attention from four `nnx.Linear` projections."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from trustjax.models.dense import dense

# Added to the scores of padded keys. Finite (not -inf) so that a row whose
# keys are all padding yields a uniform softmax instead of NaN.
_MASK_VALUE = -1e9


def attention_bias(mask: jax.Array) -> jax.Array:
  """Additive key bias f32[B,1,1,T]: 0 for real tokens, -1e9 for padding."""
  return jnp.where(mask.astype(bool), 0.0, _MASK_VALUE).astype(
      jnp.float32)[:, None, None, :]


class SelfAttention(nnx.Module):
  """Multi-head scaled dot-product self-attention (Vaswani et al., 2017).

  `query`, `key`, `value` and `out` are plain `nnx.Linear(d_model, d_model)`
  layers (so per-layer / ghost-norm clipping sees ordinary dense layers).
  `__call__(x[B,T,D], bias[B,1,1,T]) -> [B,T,D]`, with `bias` from
  `attention_bias(mask)`: padded keys receive no attention, so outputs at real
  positions do not depend on what sits at padded positions. Scores and
  softmax are computed in float32 whatever the activation dtype.
  """

  def __init__(self, d_model: int, num_heads: int, *, dtype=None,
               rngs: nnx.Rngs):
    if num_heads < 1 or d_model % num_heads:
      raise ValueError(f"SelfAttention: d_model={d_model} must be a positive "
                       f"multiple of num_heads={num_heads}")
    self.num_heads = num_heads
    self.head_dim = d_model // num_heads
    kw = dict(dtype=dtype, rngs=rngs)
    self.query = nnx.Linear(d_model, d_model, **kw)
    self.key = nnx.Linear(d_model, d_model, **kw)
    self.value = nnx.Linear(d_model, d_model, **kw)
    self.out = nnx.Linear(d_model, d_model, **kw)

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    b, t, d = x.shape
    heads = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
    # The 1/sqrt(head_dim) scale is applied to q ([B,T,D]) rather than to the
    # scores ([B,H,T,T]): fewer multiplies, same result.
    q = heads(dense(self.query, x) * (self.head_dim ** -0.5))
    k, v = heads(dense(self.key, x)), heads(dense(self.value, x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    return dense(self.out, ctx.reshape(b, t, d))
