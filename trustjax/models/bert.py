"""BERT encoder in Flax NNX, architecture-exact with Hugging Face's BertModel.

BERT (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding"): word + absolute position + token
type embeddings followed by a LayerNorm, then post-LN layers

  x = LN(x + Wo Attn(x)),   x = LN(x + W2 GELU(W1 x))

with exact (erf) GELU. Evaluation mode only (no dropout): the encoder serves
as a frozen, public feature extractor (e.g. all-MiniLM-L6-v2 sentence
embeddings, `trustjax.models.sentence`), so DP training never touches it.

Attention is the library's `SelfAttention` (query/key/value/out
`nnx.Linear`s, padded keys masked by `attention_bias`); checkpoint IO
(`bert_io.py`) maps HF's `attention.output.dense` to `attention.out` and
transposes HF's (out, in) Linear weights to NNX's (in, out) kernels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from trustjax.models._hf import normal_linear as _linear
from trustjax.models._hf import torch_layer_norm
from trustjax.models.attention import SelfAttention
from trustjax.models.attention import attention_bias
from trustjax.models.dense import dense

# hidden_act -> whether jax.nn.gelu uses the tanh approximation.
_GELU_APPROXIMATE = {"gelu": False, "gelu_new": True,
                     "gelu_pytorch_tanh": True}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT hyperparameters, with Hugging Face's `BertConfig` field names.

  Defaults are HF's (bert-base). `hidden_act` is "gelu" (exact, erf) or a
  tanh approximation ("gelu_new", "gelu_pytorch_tanh"); only absolute
  position embeddings are supported.
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pad_token_id: int = 0
  position_embedding_type: str = "absolute"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers",
                 "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"BertConfig: {name}={v!r} must be a positive int")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"BertConfig: hidden_size={self.hidden_size} must be a "
                       f"multiple of num_attention_heads="
                       f"{self.num_attention_heads}")
    if self.hidden_act not in _GELU_APPROXIMATE:
      raise ValueError(f"BertConfig: hidden_act={self.hidden_act!r} is not "
                       f"supported; valid: {sorted(_GELU_APPROXIMATE)}")
    if self.position_embedding_type != "absolute":
      raise ValueError(f"BertConfig: position_embedding_type="
                       f"{self.position_embedding_type!r} is not supported; "
                       "valid: ['absolute']")
    if not self.layer_norm_eps > 0:
      raise ValueError(f"BertConfig: layer_norm_eps={self.layer_norm_eps} "
                       "must be > 0")

  def replace(self, **kw) -> "BertConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict[str, Any]:
    """The config.json dict that `transformers.BertModel` reads back."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    d.update(model_type="bert", architectures=["BertModel"])
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any], *,
                source: str = "config") -> "BertConfig":
    """Reads a HF BERT config dict; unknown keys (dropout, use_cache, ...)
    are ignored, missing ones take HF's defaults. Raises ValueError (naming
    `source`) for a non-BERT `model_type` or an unsupported option."""
    if not isinstance(d, dict):
      raise ValueError(f"{source}: expected a JSON object, got "
                       f"{type(d).__name__}")
    model_type = d.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(f"{source}: model_type={model_type!r}; trustjax's "
                       "BERT reads only model_type 'bert'")
    kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
    for name in ("layer_norm_eps", "initializer_range"):
      if name in kw:
        kw[name] = float(kw[name])
    if kw.get("pad_token_id") is None:
      kw.pop("pad_token_id", None)
    try:
      return cls(**kw)
    except ValueError as e:
      raise ValueError(f"{source}: {e}") from e


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return torch_layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)


class BertEmbeddings(nnx.Module):
  """`LN(word[ids] + position[arange(T)] + token_type[types])` -> [B,T,D]."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    init = nnx.initializers.normal(cfg.initializer_range)
    d = cfg.hidden_size
    self.word_embeddings = nnx.Embed(cfg.vocab_size, d, embedding_init=init,
                                     rngs=rngs)
    self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, d,
                                         embedding_init=init, rngs=rngs)
    self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, d,
                                           embedding_init=init, rngs=rngs)
    self.layer_norm = _layer_norm(cfg, rngs)

  def __call__(self, ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
    t = ids.shape[1]
    x = self.word_embeddings(ids) + self.token_type_embeddings(token_type_ids)
    x = x + self.position_embeddings.embedding[:t][None]
    return self.layer_norm(x)


class BertLayer(nnx.Module):
  """Post-LN layer: `x = LN(x + attn(x))`, `x = LN(x + out(gelu(inter(x))))`.

  `__call__(x f32[B,T,D], bias f32[B,1,1,T]) -> f32[B,T,D]`, `bias` from
  `attention_bias(mask)`.
  """

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    std = cfg.initializer_range
    d, inner = cfg.hidden_size, cfg.intermediate_size
    # SelfAttention keeps flax's default init (BERT's is normal(std)): the
    # encoder is meant to be loaded from a checkpoint, not trained from init.
    self.attention = SelfAttention(d, cfg.num_attention_heads, rngs=rngs)
    self.attention_norm = _layer_norm(cfg, rngs)
    self.intermediate = _linear(d, inner, std, rngs)
    self.output = _linear(inner, d, std, rngs)
    self.output_norm = _layer_norm(cfg, rngs)
    self.approximate_gelu = _GELU_APPROXIMATE[cfg.hidden_act]

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    x = self.attention_norm(x + self.attention(x, bias))
    h = jax.nn.gelu(dense(self.intermediate, x),
                    approximate=self.approximate_gelu)
    return self.output_norm(x + dense(self.output, h))


class BertEncoder(nnx.Module):
  """BERT encoder (Devlin et al., 2019), equal to HF's `BertModel` in eval.

  `__call__(ids int[B,T], mask [B,T], token_type_ids=None) -> f32[B,T,D]`,
  the last hidden state (`BertModel(...).last_hidden_state`; no pooler),
  D = `config.hidden_size`.

  - `mask` (bool or 0/1; 1 = real token): padded keys receive no attention,
    so outputs at real positions do not depend on the ids at padded
    positions. Outputs at padded positions are meaningless.
  - Position ids are `arange(T)` (as HF's), so pad on the right.
    T <= `config.max_position_embeddings`.
  - `token_type_ids` int[B,T] (segment ids), default all 0.
  No layer mixes rows of the batch; there is no dropout.
  """

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, BertConfig):
      raise ValueError(f"BertEncoder: config must be a BertConfig, got "
                       f"{type(config).__name__}")
    self.config = config
    self.embeddings = BertEmbeddings(config, rngs=rngs)
    self.layers = nnx.List([BertLayer(config, rngs=rngs)
                            for _ in range(config.num_hidden_layers)])

  def __call__(self, ids: jax.Array, mask: jax.Array,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    if ids.ndim != 2:
      raise ValueError(f"BertEncoder: ids has shape {ids.shape}; expected "
                       "[B, T]")
    b, t = ids.shape
    if t > cfg.max_position_embeddings:
      raise ValueError(f"BertEncoder: sequence length {t} exceeds "
                       f"max_position_embeddings="
                       f"{cfg.max_position_embeddings}")
    if mask.shape != (b, t):
      raise ValueError(f"BertEncoder: mask shape {mask.shape} != [B, T] = "
                       f"{(b, t)}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros((b, t), jnp.int32)
    elif token_type_ids.shape != (b, t):
      raise ValueError(f"BertEncoder: token_type_ids shape "
                       f"{token_type_ids.shape} != [B, T] = {(b, t)}")
    x = self.embeddings(ids, token_type_ids)
    bias = attention_bias(mask)
    for layer in self.layers:
      x = layer(x, bias)
    return x
