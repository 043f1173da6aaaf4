"""Autoregressive generation for GPT2LMHeadModel under jit, with a KV cache.

The whole decode runs in one jitted function: a prefill pass over the
left-padded prompt writes keys/values of every layer into a cache of static
length S = P + max_new_tokens, then a `lax.while_loop` feeds one token per
step (cache updated in place by `dynamic_update_slice`), so no shape changes
and no recompilation between steps. Keys are masked by the prompt's padding
mask and by causality; position ids are `cumsum(mask) - 1`, so a left-padded
row generates exactly what it would alone.

Sampling (`sample_logits`): temperature scaling, then top-k (Fan et al.,
2018) and nucleus / top-p (Holtzman et al., 2020) filtering, then
`jax.random.categorical`; or greedy argmax.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from trustjax.models.gpt2 import GPT2LMHeadModel


def sample_logits(logits: jax.Array, key: jax.Array | None, *,
                  temperature: Any = 1.0, top_k: int = 0, top_p: float = 1.0,
                  greedy: bool = False) -> jax.Array:
  """Draws one token per row of logits f32[B,V] -> int32[B].

  - `greedy`: argmax (ties to the lowest id); key, temperature ignored.
  - otherwise logits / temperature, then
    - `top_k > 0`: only the k largest logits stay (ties at the k-th value all
      stay);
    - `top_p < 1`: nucleus: the smallest set of most probable tokens whose
      cumulative probability (after top-k) is >= top_p stays; always at least
      one token (ties at the cut-off value all stay);
    then a categorical draw from the renormalised distribution.
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  neg = jnp.float32(-jnp.inf)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    srt = -jnp.sort(-logits, axis=-1)  # descending
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above
    keep = before < top_p  # first entry always kept (0 < top_p)
    n_keep = jnp.sum(keep, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(srt, n_keep - 1, axis=-1)
    logits = jnp.where(logits < cutoff, neg, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _decode(model: GPT2LMHeadModel, ids, mask, key, temperature, *,
            max_new_tokens: int, top_k: int, top_p: float, greedy: bool,
            eos_id: int | None):
  cfg = model.config
  b, p = ids.shape
  n = max_new_tokens
  s = p + n
  mask = mask.astype(bool)
  key_mask = jnp.concatenate([mask, jnp.ones((b, n), bool)], axis=1)  # [B,S]
  slots = jnp.arange(s)
  n_real = jnp.sum(mask, axis=-1).astype(jnp.int32)  # [B]
  caches = [(jnp.zeros((b, s, cfg.n_head, cfg.head_dim), jnp.float32),) * 2
            for _ in range(cfg.n_layer)]

  def forward(x, allowed, caches, index):
    new = []
    for block, cache in zip(model.h, caches):
      x, kv = block(x, allowed, cache=cache, index=index)
      new.append(kv)
    return model.lm_head(model.ln_f(x[:, -1])), new

  def draw(logits, i, done):
    tok = sample_logits(logits, jax.random.fold_in(key, i),
                        temperature=temperature, top_k=top_k, top_p=top_p,
                        greedy=greedy)
    if eos_id is not None:
      tok = jnp.where(done, eos_id, tok)
      done = done | (tok == eos_id)
    return tok, done

  # Prefill: the P prompt slots at once.
  pos = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
  x = model.embed_tokens(ids) + model.wpe(pos)
  allowed = ((slots[None, :] <= jnp.arange(p)[:, None])[None, None]
             & key_mask[:, None, None, :])  # [B,1,P,S]
  logits, caches = forward(x, allowed, caches, 0)
  fill = 0 if eos_id is None else eos_id
  out = jnp.full((b, n), fill, jnp.int32)
  tok, done = draw(logits, 0, jnp.zeros((b,), bool))
  out = out.at[:, 0].set(tok)

  def cond(carry):
    i, _, _, done = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, out, caches, done = carry
    prev = jax.lax.dynamic_slice_in_dim(out, i - 1, 1, axis=1)  # [B,1]
    slot = p + i - 1
    x = model.embed_tokens(prev) + model.wpe((n_real + i - 1)[:, None])
    allowed = ((slots <= slot)[None, :] & key_mask)[:, None, None, :]
    logits, caches = forward(x, allowed, caches, slot)
    tok, done = draw(logits, i, done)
    out = jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], i, axis=1)
    return i + 1, out, caches, done

  _, out, _, _ = jax.lax.while_loop(cond, body, (1, out, caches, done))
  return out


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "max_new_tokens", "top_k", "top_p", "greedy", "eos_id"))
def _decode_jit(graphdef, state, ids, mask, key, temperature, *,
                max_new_tokens, top_k, top_p, greedy, eos_id):
  model = nnx.merge(graphdef, state)
  return _decode(model, ids, mask, key, temperature,
                 max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                 greedy=greedy, eos_id=eos_id)


def _check_left_padded(mask: np.ndarray) -> None:
  m = mask.astype(bool)
  empty = np.where(~m.any(axis=1))[0]
  if empty.size:
    raise ValueError(f"generate: prompt_mask row {int(empty[0])} has no real "
                     "token; every prompt needs at least one")
  # Left padding: once a row turns real it stays real.
  bad = np.where((m[:, :-1] & ~m[:, 1:]).any(axis=1))[0]
  if bad.size:
    raise ValueError(f"generate: prompt_mask row {int(bad[0])} = "
                     f"{m[bad[0]].astype(int).tolist()} is not left-padded "
                     "(padding must come before the real tokens)")


def generate(model: GPT2LMHeadModel, prompt_ids: Any,
             prompt_mask: Any = None, *, max_new_tokens: int,
             key: jax.Array | None = None, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
             eos_id: int | None = None) -> jax.Array:
  """Continues left-padded prompts; returns the new tokens int32[B, N].

  Args:
    model: a GPT2LMHeadModel (run deterministically: no dropout).
    prompt_ids: int[B,P], LEFT-padded (pad ids are ignored).
    prompt_mask: [B,P], 1 = real token; None = no padding. Each row must be
      0...0 1...1 with at least one real token.
    max_new_tokens: N >= 1; P + N must be <= config.n_positions.
    key: jax random key, required unless `greedy`. Step i draws with
      `fold_in(key, i)`: same key, same prompts -> same tokens.
    temperature, top_k, top_p: see `sample_logits` (top_k and top_p are
      static: a new value compiles anew).
    greedy: argmax decoding.
    eos_id: when a row emits it, the row stops: all later tokens of that
      row are eos_id; decoding ends early once every row has stopped.

  Returns:
    int32[B, N]. Greedy: row b equals what `generate` returns for row b's
    unpadded prompt alone (up to float rounding of near-tied logits).
    Sampled rows follow the same distribution as alone, but the random
    draws depend on the batch shape.
  """
  if not isinstance(model, GPT2LMHeadModel):
    raise ValueError(f"generate: model must be a GPT2LMHeadModel, got "
                     f"{type(model).__name__}")
  cfg = model.config
  ids = jnp.asarray(prompt_ids)
  if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"generate: prompt_ids must be int[B, P], got "
                     f"{ids.dtype}{list(ids.shape)}")
  ids = ids.astype(jnp.int32)
  b, p = ids.shape
  if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens \
      or max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens={max_new_tokens!r} must be a "
                     "positive int")
  max_new_tokens = int(max_new_tokens)
  if p + max_new_tokens > cfg.n_positions:
    raise ValueError(f"generate: prompt length P={p} + max_new_tokens="
                     f"{max_new_tokens} = {p + max_new_tokens} exceeds "
                     f"n_positions={cfg.n_positions}")
  if prompt_mask is None:
    mask = jnp.ones((b, p), bool)
  else:
    mask = jnp.asarray(prompt_mask)
    if mask.shape != (b, p):
      raise ValueError(f"generate: prompt_mask shape {mask.shape} != "
                       f"prompt_ids shape {(b, p)}")
    if not isinstance(mask, jax.core.Tracer):
      _check_left_padded(np.asarray(mask))
    mask = mask.astype(bool)
  if not greedy:
    if key is None:
      raise ValueError("generate: sampling (greedy=False) needs key=<jax "
                       "random key>; got key=None")
    if isinstance(temperature, (int, float)) and not temperature > 0:
      raise ValueError(f"generate: temperature={temperature} must be > 0 "
                       "(use greedy=True for argmax decoding)")
    if not 0 <= int(top_k) <= cfg.vocab_size:
      raise ValueError(f"generate: top_k={top_k} must be in [0, "
                       f"{cfg.vocab_size}] (0 = off)")
    if not 0.0 < float(top_p) <= 1.0:
      raise ValueError(f"generate: top_p={top_p} must be in (0, 1]")
  if eos_id is not None and not 0 <= int(eos_id) < cfg.vocab_size:
    raise ValueError(f"generate: eos_id={eos_id} must be in [0, "
                     f"{cfg.vocab_size})")
  if key is None:
    key = jax.random.key(0)  # unused by greedy decoding
  graphdef, state = nnx.split(model)
  return _decode_jit(
      graphdef, state, ids, mask, key, jnp.float32(temperature),
      max_new_tokens=max_new_tokens, top_k=0 if greedy else int(top_k),
      top_p=1.0 if greedy else float(top_p), greedy=bool(greedy),
      eos_id=None if eos_id is None else int(eos_id))
