"""GPT-2 in Flax NNX, architecture-exact with Hugging Face's GPT2LMHeadModel.

GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask
Learners"): learned position embeddings, pre-LN blocks
`x + Attn(LN1(x))`, `x + MLP(LN2(x))` with a fused QKV projection (`c_attn`)
and `gelu_new` (the tanh approximation of GELU), a final LayerNorm (`ln_f`) and
an LM head tied to the token embedding (`logits = h @ wte.T`).

Module attribute names mirror the HF checkpoint (`wte`, `wpe`, `h[i].ln_1`,
`h[i].attn.c_attn`, `h[i].attn.c_proj`, `h[i].ln_2`, `h[i].mlp.c_fc`,
`h[i].mlp.c_proj`, `ln_f`); `nnx.Linear` kernels are stored (in, out), the
same layout as HF's Conv1D weights, so checkpoint IO (`gpt2_io.py`) is a pure
renaming. Every projection is an ordinary `nnx.Linear` / `nnx.Embed`, so
per-layer and ghost-norm clipping see standard layers.

Padding: `attention_mask` [B,T] (1 = real, 0 = padding) removes padded keys
from attention. With left padding (generation), position ids default to
`cumsum(mask) - 1` clipped at 0, so a padded prompt gets the same positions
as the unpadded one. No layer mixes rows of the batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from trustjax.models._hf import normal_linear as _linear
from trustjax.models._hf import read_json_config
from trustjax.models._hf import torch_layer_norm
from trustjax.models._keys import dropout_key
from trustjax.models._keys import split_or_none
from trustjax.models.dense import dense

# Scores of masked (padding / future) keys are replaced by this value. Finite,
# so a query whose keys are all masked (a padded query) gets a uniform softmax
# instead of NaN; its output is never attended to by a real query.
_MASK_VALUE = -1e9

# HF GPT2Config defaults, used for fields missing from a config.json.
_HF_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768,
                    n_layer=12, n_head=12, n_inner=None,
                    layer_norm_epsilon=1e-5, embd_pdrop=0.1, attn_pdrop=0.1,
                    resid_pdrop=0.1, initializer_range=0.02,
                    bos_token_id=50256, eos_token_id=50256)


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """GPT-2 hyperparameters, with Hugging Face's field names.

  Defaults are GPT-2 small (124M) without dropout. `n_inner=None` means an MLP
  width of 4 * n_embd. The HF config.json fields are read by `from_hf_dict`
  (fields it lacks take HF's defaults, where dropout is 0.1) and written by
  `to_hf_dict`.
  """
  vocab_size: int = 50257
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12
  layer_norm_epsilon: float = 1e-5
  embd_pdrop: float = 0.0
  attn_pdrop: float = 0.0
  resid_pdrop: float = 0.0
  n_inner: int | None = None
  initializer_range: float = 0.02
  bos_token_id: int = 50256
  eos_token_id: int = 50256

  def __post_init__(self):
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"GPT2Config: {name}={v!r} must be a positive int")
    if self.n_embd % self.n_head:
      raise ValueError(f"GPT2Config: n_embd={self.n_embd} must be a multiple "
                       f"of n_head={self.n_head}")
    if self.n_inner is not None and (not isinstance(self.n_inner, int)
                                     or self.n_inner < 1):
      raise ValueError(f"GPT2Config: n_inner={self.n_inner!r} must be None "
                       "(= 4 * n_embd) or a positive int")
    for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
      v = getattr(self, name)
      if not 0.0 <= v < 1.0:
        raise ValueError(f"GPT2Config: {name}={v} must be in [0, 1)")
    if not self.layer_norm_epsilon > 0:
      raise ValueError(f"GPT2Config: layer_norm_epsilon="
                       f"{self.layer_norm_epsilon} must be > 0")

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  @property
  def inner_dim(self) -> int:
    return 4 * self.n_embd if self.n_inner is None else self.n_inner

  def replace(self, **kw) -> "GPT2Config":
    return dataclasses.replace(self, **kw)

  def to_hf_dict(self) -> dict[str, Any]:
    """The config.json dict `transformers.GPT2Config` reads back unchanged."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    d.update(model_type="gpt2", architectures=["GPT2LMHeadModel"],
             activation_function="gelu_new", n_ctx=self.n_positions,
             scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
             reorder_and_upcast_attn=False, tie_word_embeddings=True,
             add_cross_attention=False, use_cache=True)
    return d

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], *,
                   source: str = "config") -> "GPT2Config":
    """Reads a HF GPT-2 config dict; raises ValueError on options GPT-2
    variants use that this implementation does not (naming `source`)."""
    if not isinstance(d, dict):
      raise ValueError(f"{source}: expected a JSON object, got {type(d)}")
    checks = (("model_type", "gpt2", ("gpt2",)),
              ("activation_function", "gelu_new",
               ("gelu_new", "gelu_pytorch_tanh")),
              ("scale_attn_weights", True, (True,)),
              ("scale_attn_by_inverse_layer_idx", False, (False,)),
              ("add_cross_attention", False, (False,)))
    for key, default, valid in checks:
      v = d.get(key, default)
      if v not in valid:
        raise ValueError(f"{source}: {key}={v!r} is not supported by "
                         f"trustjax GPT-2; valid: {list(valid)}")
    kw = {}
    for f in dataclasses.fields(cls):
      v = d.get(f.name, _HF_DEFAULTS[f.name])
      if f.name in ("bos_token_id", "eos_token_id") and v is None:
        v = _HF_DEFAULTS[f.name]
      kw[f.name] = v
    if "n_ctx" in d and "n_positions" not in d:
      kw["n_positions"] = d["n_ctx"]
    for name in ("layer_norm_epsilon", "embd_pdrop", "attn_pdrop",
                 "resid_pdrop", "initializer_range"):
      kw[name] = float(kw[name])
    try:
      return cls(**kw)
    except ValueError as e:
      raise ValueError(f"{source}: {e}") from e

  @classmethod
  def from_json_file(cls, path: str) -> "GPT2Config":
    return cls.from_hf_dict(read_json_config(path, "GPT-2"), source=path)


def _layer_norm(cfg: GPT2Config, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return torch_layer_norm(cfg.n_embd, cfg.layer_norm_epsilon, rngs)


class GPT2Attention(nnx.Module):
  """Causal multi-head attention with a fused QKV projection.

  `__call__(x[B,T,D], allowed bool[B,1,T,S], *, cache=None, index=0,
  key=None) -> (y[B,T,D], (k, v))`. Without `cache`, keys/values are those of
  `x` (S = T). With `cache=(k, v)` (each f32[B,S,H,hd]) the T new keys/values
  are written at slots `index .. index+T-1` and the queries attend over all S
  slots; `allowed[b,0,t,s]` says which (query, key slot) pairs may attend.
  The returned (k, v) is the updated cache (or this call's keys/values).
  """

  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    std = cfg.initializer_range
    self.n_head = cfg.n_head
    self.head_dim = cfg.head_dim
    self.c_attn = _linear(cfg.n_embd, 3 * cfg.n_embd, std, rngs)
    self.c_proj = _linear(cfg.n_embd, cfg.n_embd,
                          std / math.sqrt(2 * cfg.n_layer), rngs)
    self.attn_dropout = nnx.Dropout(cfg.attn_pdrop)
    self.resid_dropout = nnx.Dropout(cfg.resid_pdrop)

  def __call__(self, x: jax.Array, allowed: jax.Array, *, cache=None,
               index: Any = 0, key_attn=None, key_resid=None):
    b, t, d = x.shape
    q, k, v = jnp.split(dense(self.c_attn, x), 3, axis=-1)
    heads = lambda y: y.reshape(b, t, self.n_head, self.head_dim)
    q, k, v = heads(q), heads(k), heads(v)
    if cache is not None:
      k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype),
                                       (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype),
                                       (0, index, 0, 0))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(self.head_dim))
    scores = jnp.where(allowed, scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = self.attn_dropout(probs, deterministic=key_attn is None,
                              rngs=key_attn).astype(v.dtype)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
    y = dense(self.c_proj, ctx)
    y = self.resid_dropout(y, deterministic=key_resid is None, rngs=key_resid)
    return y, (k, v)


class GPT2MLP(nnx.Module):
  """`c_proj(gelu_new(c_fc(x)))`, width `cfg.inner_dim`."""

  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    std = cfg.initializer_range
    self.c_fc = _linear(cfg.n_embd, cfg.inner_dim, std, rngs)
    self.c_proj = _linear(cfg.inner_dim, cfg.n_embd,
                          std / math.sqrt(2 * cfg.n_layer), rngs)
    self.dropout = nnx.Dropout(cfg.resid_pdrop)

  def __call__(self, x: jax.Array, *, key=None) -> jax.Array:
    # gelu_new = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    y = dense(self.c_proj, jax.nn.gelu(dense(self.c_fc, x),
                                       approximate=True))
    return self.dropout(y, deterministic=key is None, rngs=key)


class GPT2Block(nnx.Module):
  """Pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`."""

  def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
    self.ln_1 = _layer_norm(cfg, rngs)
    self.attn = GPT2Attention(cfg, rngs=rngs)
    self.ln_2 = _layer_norm(cfg, rngs)
    self.mlp = GPT2MLP(cfg, rngs=rngs)

  def __call__(self, x: jax.Array, allowed: jax.Array, *, cache=None,
               index: Any = 0, key=None):
    """Returns (x', (k, v)); see `GPT2Attention` for `cache` / `index`."""
    k1, k2, k3 = split_or_none(key, 3)
    y, kv = self.attn(self.ln_1(x), allowed, cache=cache, index=index,
                      key_attn=k1, key_resid=k2)
    x = x + y
    x = x + self.mlp(self.ln_2(x), key=k3)
    return x, kv


def default_position_ids(attention_mask: jax.Array | None, batch: int,
                         length: int) -> jax.Array:
  """int32[B,T]: `arange(T)` without a mask; `cumsum(mask)-1` clipped at 0
  with one, so left-padded rows number their real tokens 0, 1, ..."""
  if attention_mask is None:
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                            (batch, length))
  m = attention_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0).astype(jnp.int32)


def causal_allowed(attention_mask: jax.Array | None, batch: int,
                   length: int) -> jax.Array:
  """bool[B,1,T,T]: query t may attend key s iff s <= t and key s is real."""
  causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
  if attention_mask is None:
    return jnp.broadcast_to(causal, (batch, 1, length, length))
  keys = attention_mask.astype(bool)[:, None, None, :]
  return causal & keys


class GPT2LMHeadModel(nnx.Module):
  """GPT-2 language model (Radford et al., 2019), HF-compatible.

  `__call__(input_ids int[B,T] | None, *, attention_mask=None, position_ids=
  None, inputs_embeds=None, deterministic=True, rngs=None) -> logits
  f32[B,T,V]` where logits[b,t] is the next-token distribution after
  position t. Equal to `transformers.GPT2LMHeadModel` on the same weights
  (to float32 rounding) given the same position ids.

  - `attention_mask` [B,T] (bool or 0/1; 1 = real): padded keys receive no
    attention, so real positions' logits do not depend on padded ids.
    Logits at padded positions are meaningless.
  - `position_ids` int[B,T]: default `arange(T)` without a mask and
    `cumsum(mask)-1` (clipped at 0) with one (right for left and right
    padding alike). Note: HF defaults to `arange(T)` even with a mask.
  - `inputs_embeds` f32[B,T,D] replaces the token lookup (`embed_tokens`);
    position embeddings are still added; `input_ids` may then be None.
  - Dropout (`embd_pdrop` on embeddings, `attn_pdrop` on attention
    probabilities, `resid_pdrop` on attention and MLP outputs) is active only
    with `deterministic=False`, driven by `rngs` (a jax key or `nnx.Rngs`).
  - The LM head is `wte` itself (tied): `logits = ln_f(h) @ wte.embedding.T`.
  """

  def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
    if not isinstance(config, GPT2Config):
      raise ValueError(f"GPT2LMHeadModel: config must be a GPT2Config, got "
                       f"{type(config).__name__}")
    self.config = config
    init = nnx.initializers.normal(config.initializer_range)
    self.wte = nnx.Embed(config.vocab_size, config.n_embd,
                         embedding_init=init, rngs=rngs)
    self.wpe = nnx.Embed(config.n_positions, config.n_embd,
                         embedding_init=init, rngs=rngs)
    self.drop = nnx.Dropout(config.embd_pdrop)
    self.h = nnx.List([GPT2Block(config, rngs=rngs)
                       for _ in range(config.n_layer)])
    self.ln_f = _layer_norm(config, rngs)

  def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
    """Token embeddings f32[B,T,D] (`wte` lookup only, no positions)."""
    return self.wte(input_ids)

  def lm_head(self, hidden: jax.Array) -> jax.Array:
    """Logits f32[...,V] of final (post-ln_f) hidden states [...,D]."""
    return self.wte.attend(hidden)

  def _embed(self, input_ids, attention_mask, position_ids, inputs_embeds,
             key):
    cfg = self.config
    if inputs_embeds is None:
      if input_ids is None:
        raise ValueError("GPT2LMHeadModel: pass input_ids or inputs_embeds")
      if input_ids.ndim != 2:
        raise ValueError(f"GPT2LMHeadModel: input_ids has shape "
                         f"{input_ids.shape}; expected [B, T]")
      x = self.embed_tokens(input_ids)
    else:
      x = inputs_embeds
      if x.ndim != 3 or x.shape[-1] != cfg.n_embd:
        raise ValueError(f"GPT2LMHeadModel: inputs_embeds has shape "
                         f"{x.shape}; expected [B, T, {cfg.n_embd}]")
    b, t = x.shape[:2]
    if t > cfg.n_positions:
      raise ValueError(f"GPT2LMHeadModel: sequence length {t} exceeds "
                       f"n_positions={cfg.n_positions}")
    if attention_mask is not None and attention_mask.shape != (b, t):
      raise ValueError(f"GPT2LMHeadModel: attention_mask shape "
                       f"{attention_mask.shape} != [B, T] = {(b, t)}")
    if position_ids is None:
      position_ids = default_position_ids(attention_mask, b, t)
    elif position_ids.shape != (b, t):
      position_ids = jnp.broadcast_to(position_ids, (b, t))
    x = x + self.wpe(position_ids)
    return self.drop(x, deterministic=key is None, rngs=key)

  def _run(self, input_ids, attention_mask, position_ids, inputs_embeds,
           deterministic, rngs, all_layers):
    cfg = self.config
    rate = max(cfg.embd_pdrop, cfg.attn_pdrop, cfg.resid_pdrop)
    key = dropout_key(rngs, deterministic, rate, "GPT2LMHeadModel")
    key_emb, *layer_keys = split_or_none(key, cfg.n_layer + 1)
    x = self._embed(input_ids, attention_mask, position_ids, inputs_embeds,
                    key_emb)
    allowed = causal_allowed(attention_mask, x.shape[0], x.shape[1])
    states = [x]
    for block, k in zip(self.h, layer_keys):
      x, _ = block(x, allowed, key=k)
      states.append(x)
    states[-1] = self.ln_f(x)
    return states if all_layers else states[-1]

  def __call__(self, input_ids: jax.Array | None, *,
               attention_mask: jax.Array | None = None,
               position_ids: jax.Array | None = None,
               inputs_embeds: jax.Array | None = None,
               deterministic: bool = True, rngs: Any = None) -> jax.Array:
    h = self._run(input_ids, attention_mask, position_ids, inputs_embeds,
                  deterministic, rngs, all_layers=False)
    return self.lm_head(h)

  def hidden_states(self, input_ids: jax.Array | None, *,
                    attention_mask: jax.Array | None = None,
                    position_ids: jax.Array | None = None,
                    inputs_embeds: jax.Array | None = None,
                    all_layers: bool = False, deterministic: bool = True,
                    rngs: Any = None):
    """Final hidden states f32[B,T,D] (after ln_f); with `all_layers` a list
    of n_layer+1 arrays: the embeddings (token + position), then each block's
    output, the last one after ln_f (HF's `output_hidden_states` layout)."""
    return self._run(input_ids, attention_mask, position_ids, inputs_embeds,
                     deterministic, rngs, all_layers=all_layers)


def select_layers(model: GPT2LMHeadModel,
                  layer_ids: Sequence[int]) -> GPT2LMHeadModel:
  """A new GPT2LMHeadModel keeping blocks `layer_ids` (in that order).

  Embeddings (`wte`, `wpe`) and `ln_f` are copied; block j of the result is a
  copy of block `layer_ids[j]` of `model`; config.n_layer = len(layer_ids).
  `select_layers(teacher, range(0, n_layer, 2))` is DistilGPT-2's student
  initialisation (Sanh et al., 2019). Arrays are copied, not shared.
  """
  cfg = model.config
  layer_ids = [int(i) for i in layer_ids]
  if not layer_ids:
    raise ValueError("select_layers: layer_ids is empty; need >= 1 layer")
  bad = [i for i in layer_ids if not 0 <= i < cfg.n_layer]
  if bad:
    raise ValueError(f"select_layers: layer_ids {bad} out of range "
                     f"[0, {cfg.n_layer})")
  new_cfg = cfg.replace(n_layer=len(layer_ids))
  new = nnx.eval_shape(lambda: GPT2LMHeadModel(new_cfg, rngs=nnx.Rngs(0)))
  copy = lambda s: jax.tree.map(jnp.array, s)
  for name in ("wte", "wpe", "ln_f"):
    nnx.update(getattr(new, name), copy(nnx.state(getattr(model, name))))
  for j, i in enumerate(layer_ids):
    nnx.update(new.h[j], copy(nnx.state(model.h[i])))
  return new


def causal_lm_token_nll(logits: jax.Array, ids: jax.Array,
                        mask: jax.Array | None = None):
  """Next-token NLL per position, and which positions count.

  Args:
    logits: f32[B,T,V], model output on `ids`.
    ids: int[B,T] token ids.
    mask: [B,T] (1 = real token) or None (all real).

  Returns:
    (nll f32[B,T-1], weight f32[B,T-1]): nll[b,t] = -log p(ids[b,t+1] |
    ids[b,:t+1]); weight[b,t] = 1 iff tokens t and t+1 are both real (so with
    left padding the first real token, which has no context, is not scored).
    Perplexity of a corpus = exp(sum(nll * weight) / sum(weight)).
  """
  if logits.ndim != 3 or logits.shape[:2] != ids.shape:
    raise ValueError(f"causal_lm_loss: logits shape {logits.shape} must be "
                     f"[B, T, V] with [B, T] = ids shape {ids.shape}")
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, ids[:, 1:, None].astype(jnp.int32),
                             axis=-1)[..., 0]
  if mask is None:
    weight = jnp.ones(nll.shape, jnp.float32)
  else:
    if mask.shape != ids.shape:
      raise ValueError(f"causal_lm_loss: mask shape {mask.shape} != ids "
                       f"shape {ids.shape}")
    m = mask.astype(bool)
    weight = (m[:, 1:] & m[:, :-1]).astype(jnp.float32)
  return nll, weight


def causal_lm_loss(logits: jax.Array, ids: jax.Array,
                   mask: jax.Array | None = None) -> jax.Array:
  """Per-example mean next-token NLL f32[B] (token-averaged within a row).

  Row b averages `causal_lm_token_nll` over its scored positions (both the
  context token and the target real); a row with no scored position gets 0.
  Depends on row b only, so it is a valid per-example loss for DP-SGD.
  """
  nll, w = causal_lm_token_nll(logits, ids, mask)
  return jnp.sum(nll * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)
