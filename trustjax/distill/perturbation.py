"""Teacher prediction perturbation with counterfactual contexts.

Gupta et al. 2022, "Mitigating Gender Bias in Distilled Language Models via
Counterfactual Role Reversal" (Findings of ACL, arXiv:2203.12574): the
student is distilled towards a teacher distribution that combines the
teacher's next-token distribution on the original context x with its
distribution on the counterfactual context x' (every gendered token
swapped), the latter mapped back through the swap so that "he" in the
counterfactual world counts as "she" in the original:

  p'(j | x) = p(perm[j] | x'),   x' = perm[x]   (perm an involution over ids)
  q = normalise(combine(p, p')), combine in {max, mean, expmean}

  max:     elementwise maximum
  mean:    arithmetic mean (p + p') / 2
  expmean: geometric mean exp((log p + log p') / 2)

then renormalised to sum to 1. Properties (tested):
  * q sums to 1 at every position;
  * at a position whose context x[:t+1] holds no gendered token, q = p (the
    teacher's own distribution: there is nothing to reverse);
  * q(perm[x])[perm[j]] = q(x)[j] (symmetric under the swap) for every
    combine, because perm is an involution.

The counterfactual context is built at the token level (`perm[ids]`), which
keeps it aligned position by position with the original; only pairs that
are single tokens are swapped (see `fairness.token_permutation`).
All arrays are [B,T,V] (or [B,T] for ids/masks); distributions are taken at
the distillation temperature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

METHODS = ("max", "mean", "expmean")


def counterfactual_ids(ids: jax.Array, perm: jax.Array) -> jax.Array:
  """int[B,T]: every token replaced by its partner (`perm[ids]`)."""
  return jnp.asarray(perm)[ids]


def gendered_context(ids: jax.Array, perm: jax.Array,
                     mask: jax.Array | None = None) -> jax.Array:
  """bool[B,T]: the context ids[:, :t+1] of position t holds a gendered
  real token."""
  g = jnp.asarray(perm)[ids] != ids
  if mask is not None:
    g = g & mask.astype(bool)
  return jnp.cumsum(g.astype(jnp.int32), axis=1) > 0


def combine_logprobs(logp: jax.Array, logp_cf: jax.Array, perm: jax.Array,
                     method: str) -> jax.Array:
  """Log of normalise(combine(p, p'[..., perm])), f32[...,V].

  Args:
    logp: log-probabilities on the original context [...,V].
    logp_cf: log-probabilities on the counterfactual context [...,V], in the
      counterfactual world's ids (mapped here through `perm`).
    perm: int[V] involution.
    method: "max", "mean" or "expmean".
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r}; valid: {METHODS}")
  mapped = jnp.take(logp_cf, jnp.asarray(perm), axis=-1)
  if method == "expmean":
    return jax.nn.log_softmax(0.5 * (logp + mapped), axis=-1)
  if method == "max":
    comb = jnp.maximum(logp, mapped)
  else:
    comb = jnp.logaddexp(logp, mapped) - jnp.log(2.0)
  return comb - jax.scipy.special.logsumexp(comb, axis=-1, keepdims=True)


def perturbed_teacher_logprobs(teacher_logits: jax.Array,
                               teacher_logits_cf: jax.Array,
                               ids: jax.Array, mask: jax.Array | None,
                               perm: jax.Array, method: str,
                               temperature: float = 1.0) -> jax.Array:
  """Teacher log-probabilities at temperature T, perturbed where gendered.

  Args:
    teacher_logits: f32[B,T,V] teacher logits on `ids`.
    teacher_logits_cf: f32[B,T,V] teacher logits on `perm[ids]`.
    ids, mask: [B,T] the original tokens and real-token mask.
    perm: int[V] token involution.
    method: "max", "mean" or "expmean".
    temperature: T > 0; both distributions are softmax(logits / T).

  Returns:
    f32[B,T,V] log q: the combined, renormalised distribution at positions
    whose context holds a gendered token, log_softmax(teacher / T) elsewhere.
  """
  logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature,
                            axis=-1)
  logp_cf = jax.nn.log_softmax(
      teacher_logits_cf.astype(jnp.float32) / temperature, axis=-1)
  comb = combine_logprobs(logp, logp_cf, perm, method)
  use = gendered_context(ids, perm, mask)[..., None]
  return jnp.where(use, comb, logp)
