"""Knowledge-distillation loss for causal language models.

Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network",
arXiv:1503.02531) and DistilGPT-2 / DistilBERT (Sanh et al. 2019,
arXiv:1910.01108): the student matches the teacher's temperature-softened
next-token distribution (KL, scaled by T^2 so its gradient magnitude does not
shrink with T) and the data (cross-entropy on the next token).

Shapes: logits/probabilities [B,T,V] over positions, where position t is the
distribution of token t+1; `ids`/`mask` [B,T]. Position t counts iff tokens t
and t+1 are both real (`causal_lm_token_nll`'s weight), and the batch loss is
the token-weighted mean over all counted positions of the batch (so every
real target token weighs the same, whatever its row's length).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_weight(ids: jax.Array, mask: jax.Array | None) -> jax.Array:
  """f32[B,T-1]: 1 where tokens t and t+1 are both real."""
  if mask is None:
    return jnp.ones((ids.shape[0], ids.shape[1] - 1), jnp.float32)
  m = mask.astype(bool)
  return (m[:, 1:] & m[:, :-1]).astype(jnp.float32)


def kd_token_kl(student_logits: jax.Array, teacher_logprobs: jax.Array,
                temperature: float) -> jax.Array:
  """T^2 * KL(teacher || softmax(student / T)) per position, f32[B,T].

  `teacher_logprobs` [B,T,V] are log-probabilities already at temperature T
  (log_softmax(teacher_logits / T), possibly perturbed and renormalised).
  Entries with teacher probability 0 contribute 0.
  """
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature,
                         axis=-1)
  p = jnp.exp(teacher_logprobs)
  kl = jnp.sum(jnp.where(p > 0, p * (teacher_logprobs - s), 0.0), axis=-1)
  return temperature ** 2 * kl


def distillation_loss(student_logits: jax.Array, ids: jax.Array,
                      mask: jax.Array | None,
                      teacher_logprobs: jax.Array | None, *,
                      temperature: float = 2.0, alpha_kd: float = 0.5,
                      alpha_ce: float = 0.5) -> tuple[jax.Array, dict]:
  """alpha_kd * T^2 KL(teacher_T || student_T) + alpha_ce * CE(student, ids).

  Args:
    student_logits: f32[B,T,V].
    ids: int[B,T] tokens; the target of position t is ids[:, t+1].
    mask: [B,T] (1 = real) or None.
    teacher_logprobs: f32[B,T,V] teacher log-probabilities at temperature
      T, or None (plain LM training: the KD term is 0 and alpha_kd is
      ignored).
    temperature: T > 0, applied to the student inside the KL term only.
    alpha_kd, alpha_ce: weights of the two terms.

  Returns:
    (loss scalar, {"ce", "kd", "num_tokens"}): token-weighted means over the
    counted positions of the batch (module docstring).
  """
  w = next_token_weight(ids, mask)
  n = jnp.maximum(jnp.sum(w), 1.0)
  logp = jax.nn.log_softmax(student_logits[:, :-1].astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, ids[:, 1:, None].astype(jnp.int32),
                             axis=-1)[..., 0]
  ce = jnp.sum(nll * w) / n
  if teacher_logprobs is None:
    return alpha_ce * ce, {"ce": ce, "kd": jnp.zeros(()), "num_tokens": n}
  kl = kd_token_kl(student_logits[:, :-1], teacher_logprobs[:, :-1],
                   temperature)
  kd = jnp.sum(kl * w) / n
  return alpha_kd * kd + alpha_ce * ce, {"ce": ce, "kd": kd, "num_tokens": n}
