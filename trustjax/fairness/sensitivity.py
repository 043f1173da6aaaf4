"""Accumulated prediction sensitivity (Krishna et al., ACL 2022).

"Measuring Fairness of Text Classifiers via Prediction Sensitivity",
arXiv:2203.08670, building on Maughan & Near (2020). A classifier is unfair
on x when its prediction is sensitive to the input features that encode
protected status, as judged by a separate protected-status model g (e.g. a
gender classifier on the same text).

Implemented formula. For one example with input embeddings E (features j =
(position t, dimension d) over real tokens), classifier probabilities
p(E) [C] and protected-status model probabilities q(E) [C_p] (a single
logit is read as P = sigmoid(logit), C_p = 1):

  a_j = sum_c v_c |d p_c / d E_j|          classifier sensitivity per feature
  u_j = sum_k     |d q_k / d E_j|          how much feature j drives g
  w_j = u_j / sum_j' u_j'                  (w = 0 if u = 0)
  PS(x) = sum_j a_j w_j                    prediction sensitivity of x
  APS   = (1/B) sum_x PS(x)                accumulated over the data set

v weights the output classes (`class_weights`): "uniform" (v_c = 1/C, the
default), "predicted" (one-hot at argmax p: sensitivity of the predicted
class only, one backward pass) or a user vector [C].

Normalisation: w sums to 1 over features, so PS is a w-weighted average of
the classifier's per-feature gradient magnitudes; it does not depend on the
scale of g's gradients, is 0 when the classifier's output does not depend on
the features g uses (or g depends on nothing), and grows linearly with the
classifier's reliance on them. APS is the mean, not the sum, of PS over
examples (so data sets of different sizes compare); `total` is B * APS.

Feature levels (`features=`):
- "embedding": j = (t, d); both models read the SAME embeddings E [T, D]
  (e.g. g is a probe on the classifier's input embeddings).
- "token": j = t; each model is differentiated with respect to its own
  embeddings of the same tokens, and both a and u are summed over d
  (a_t = sum_d a_{t,d}): models with different embedding tables compare at
  the level of tokens.

Everything is jnp: per-example Jacobians by `jax.jacrev` (or `jax.grad` for
"predicted"), `vmap` over examples, `jit` per chunk of `batch_size`.
Padded positions (mask 0) carry no weight.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# (embeds [B, T, D], mask [B, T]) -> logits [B, C] (or [B]: one logit)
ApplyFn = Callable[[jax.Array, jax.Array], jax.Array]
FEATURES = ("embedding", "token")


@dataclasses.dataclass(frozen=True)
class EmbeddingModel:
  """A model seen through its input embeddings.

  `embed(ids [B,T]) -> [B,T,D]`; `apply(embeds [B,T,D], mask [B,T]) ->
  logits [B,C]`. Both pure (parameters captured), so they trace under jit.
  """
  embed: Callable[[jax.Array], jax.Array]
  apply: ApplyFn


def from_nnx(model) -> EmbeddingModel:
  """`EmbeddingModel` of a trustjax classifier (`TransformerClassifier`,
  `BagOfEmbeddings`: `embed(ids)` and `__call__(None, mask,
  inputs_embeds=...)`), evaluated deterministically."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)

  def embed(ids):
    return nnx.merge(graphdef, state).embed(ids)

  def apply(embeds, mask):
    return nnx.merge(graphdef, state)(None, mask, inputs_embeds=embeds)
  return EmbeddingModel(embed, apply)


def _probs(logits: jax.Array) -> jax.Array:
  if logits.ndim == 1:
    return jax.nn.sigmoid(logits)[:, None]
  return jax.nn.softmax(logits.astype(jnp.float32), -1)


def _one(apply: ApplyFn, emb: jax.Array, mask: jax.Array) -> jax.Array:
  return _probs(apply(emb[None], mask[None]))[0]


def _class_sensitivity(apply, emb, mask, class_weights):
  """a [T, D] = sum_c v_c |d p_c / d E|."""
  if isinstance(class_weights, str) and class_weights == "predicted":
    c = jnp.argmax(_one(apply, emb, mask))
    return jnp.abs(jax.grad(lambda e: _one(apply, e, mask)[c])(emb))
  jac = jax.jacrev(lambda e: _one(apply, e, mask))(emb)     # [C, T, D]
  if isinstance(class_weights, str):                         # uniform
    v = jnp.full((jac.shape[0],), 1.0 / jac.shape[0])
  else:
    v = jnp.asarray(class_weights, jnp.float32)
  return jnp.tensordot(v, jnp.abs(jac), axes=1)


def _protected_sensitivity(apply, emb, mask):
  """u [T, D] = sum_k |d q_k / d E|."""
  jac = jax.jacrev(lambda e: _one(apply, e, mask))(emb)
  return jnp.abs(jac).sum(0)


def _ps_one(c_apply, p_apply, c_emb, p_emb, mask, *, class_weights,
            features):
  m = mask.astype(jnp.float32)[:, None]
  a = _class_sensitivity(c_apply, c_emb, mask, class_weights) * m
  u = _protected_sensitivity(p_apply, p_emb, mask) * m
  if features == "token":
    a, u = a.sum(-1), u.sum(-1)
  total = u.sum()
  w = jnp.where(total > 0, u / jnp.where(total > 0, total, 1.0), 0.0)
  return jnp.sum(a * w)


@functools.partial(jax.jit, static_argnames=("c_apply", "p_apply",
                                             "class_weights", "features"))
def _ps_chunk(ce, pe, m, *, c_apply, p_apply, class_weights, features):
  """PS of a chunk [B]; jitted once per (models, options, shapes)."""
  return jax.vmap(lambda a, b, c: _ps_one(
      c_apply, p_apply, a, b, c, class_weights=class_weights,
      features=features))(ce, pe, m)


def prediction_sensitivity(classifier: EmbeddingModel | ApplyFn,
                           protected: EmbeddingModel | ApplyFn,
                           inputs: jax.Array, mask: jax.Array, *,
                           protected_inputs: jax.Array | None = None,
                           class_weights: Any = "uniform",
                           features: str = "embedding",
                           batch_size: int = 64) -> np.ndarray:
  """Per-example prediction sensitivity PS(x) [B] (module doc formula).

  Args:
    classifier, protected: `EmbeddingModel`s (then `inputs` are token ids
      [B, T] and each model embeds them) or bare `apply` functions (then
      `inputs` are embeddings [B, T, D], shared by both models unless
      `protected_inputs` gives the protected model's own).
    mask: [B, T], 1 for real tokens.
    class_weights: "uniform", "predicted" or a vector [C].
    features: "embedding" (shared embeddings, j = (t, d)) or "token".
    batch_size: examples per jitted chunk.
  """
  if features not in FEATURES:
    raise ValueError(f"features={features!r}; valid: {FEATURES}")
  if isinstance(class_weights, str) and class_weights not in (
      "uniform", "predicted"):
    raise ValueError(f"class_weights={class_weights!r}; valid: 'uniform', "
                     "'predicted' or an array [C]")
  c_model = isinstance(classifier, EmbeddingModel)
  p_model = isinstance(protected, EmbeddingModel)
  if c_model != p_model:
    raise ValueError("pass both models as EmbeddingModel (inputs = ids) or "
                     "both as apply functions (inputs = embeddings)")
  inputs = jnp.asarray(inputs)
  mask = jnp.asarray(mask)
  if mask.ndim != 2 or mask.shape != inputs.shape[:2]:
    raise ValueError(f"mask shape {mask.shape} must be [B, T] = "
                     f"{inputs.shape[:2]}")
  if c_model:
    c_apply, p_apply = classifier.apply, protected.apply
    c_emb = jax.jit(classifier.embed)(inputs)
    p_emb = jax.jit(protected.embed)(inputs)
  else:
    c_apply, p_apply = classifier, protected
    c_emb = inputs
    p_emb = inputs if protected_inputs is None else jnp.asarray(
        protected_inputs)
  if features == "embedding" and c_emb.shape != p_emb.shape:
    raise ValueError(
        f"features='embedding' needs both models to read the same "
        f"embeddings; got {c_emb.shape} and {p_emb.shape} (use "
        "features='token')")

  if not isinstance(class_weights, str):
    class_weights = tuple(float(x) for x in np.asarray(class_weights))

  def chunk(ce, pe, m):
    return _ps_chunk(ce, pe, m, c_apply=c_apply, p_apply=p_apply,
                     class_weights=class_weights, features=features)

  n = inputs.shape[0]
  out = []
  for s in range(0, n, batch_size):
    e = min(s + batch_size, n)
    pad = batch_size - (e - s) if n > batch_size else 0
    sl = [jnp.concatenate([x[s:e], jnp.repeat(x[s:s + 1], pad, 0)])
          if pad else x[s:e] for x in (c_emb, p_emb, mask)]
    out.append(np.asarray(chunk(*sl))[:e - s])
  return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class APSResult:
  """Accumulated prediction sensitivity: the mean of `per_example` [B];
  `total` is their sum."""
  aps: float
  total: float
  per_example: np.ndarray


def accumulated_prediction_sensitivity(classifier, protected, inputs, mask,
                                       **kwargs) -> APSResult:
  """APS = mean_x PS(x) over the given examples (see module doc); same
  arguments as `prediction_sensitivity`."""
  ps = prediction_sensitivity(classifier, protected, inputs, mask, **kwargs)
  return APSResult(float(np.mean(ps)), float(np.sum(ps)), ps)
