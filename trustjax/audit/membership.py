"""Per-example membership scores and the global threshold attack.

Scores from a classifier's logits (any leading axes, class axis last):

  * `loss`: cross entropy -log p_y (TF Privacy's `loss_train/loss_test`).
  * `confidence`: p_y.
  * `logit_scaled_confidence`: log p_y - log sum_{y' != y} p_y' = z_y -
    logsumexp_{y' != y} z_{y'} (Carlini et al., S&P 2022, Sec. IV-B: the
    logit of the true-class probability, whose distribution over shadow models
    is close to Gaussian). Computed from logits, never from rounded
    probabilities, so it stays finite and exact when p_y is 1 - 1e-20.

The global threshold attack (Yeom et al., CSF 2018) predicts "member" when
the loss is below a threshold (equivalently: membership score = -loss) and is
evaluated over every threshold with `metrics.roc_curve`.

Works on numpy or jax arrays; the score functions are jit/vmap friendly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from trustjax.audit import metrics as _metrics

SCORE_NAMES = ("loss", "confidence", "logit_scaled_confidence")


def _check_logits_labels(logits, labels):
  if jnp.ndim(logits) < 1 or jnp.shape(logits)[-1] < 2:
    raise ValueError(f"logits must have a class axis (last) of size >= 2; got "
                     f"shape {jnp.shape(logits)}")
  if jnp.shape(labels) != jnp.shape(logits)[:-1]:
    raise ValueError(f"labels shape {jnp.shape(labels)} must equal logits "
                     f"shape without the class axis {jnp.shape(logits)[:-1]}")


def _true_logit(logits, labels):
  return jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32),
                             axis=-1)[..., 0]


def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross entropy f32[...] = logsumexp(z) - z_y; logits[..., C],
  labels[...]."""
  _check_logits_labels(logits, labels)
  z = jnp.asarray(logits, jnp.float32)
  return jax.nn.logsumexp(z, axis=-1) - _true_logit(z, jnp.asarray(labels))


def confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """p_y = softmax(z)_y, f32[...]."""
  return jnp.exp(-loss(logits, labels))


def logit_scaled_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log(p_y / (1 - p_y)) = z_y - logsumexp_{y' != y} z_{y'}, f32[...].

  Exact and finite for any finite logits (the true class is masked with -inf
  before the logsumexp), where log(p / (1 - p)) from float probabilities
  would give +inf as soon as p rounds to 1.
  """
  _check_logits_labels(logits, labels)
  z = jnp.asarray(logits, jnp.float32)
  labels = jnp.asarray(labels)
  onehot = jax.nn.one_hot(labels, z.shape[-1], dtype=bool)
  others = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, z), axis=-1)
  return _true_logit(z, labels) - others


def score(name: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The named per-example score (one of SCORE_NAMES)."""
  fns = {"loss": loss, "confidence": confidence,
         "logit_scaled_confidence": logit_scaled_confidence}
  if name not in fns:
    raise ValueError(f"score name={name!r} is unknown; valid: "
                     f"{', '.join(SCORE_NAMES)}")
  return fns[name](logits, labels)


@dataclasses.dataclass
class AttackInputData:
  """Target-model outputs on members (train) and non-members (test).

  Field names are TF Privacy's (`AttackInputData`). Give the losses, or the
  logits and labels (losses are then computed).
  """
  logits_train: np.ndarray | None = None
  logits_test: np.ndarray | None = None
  labels_train: np.ndarray | None = None
  labels_test: np.ndarray | None = None
  loss_train: np.ndarray | None = None
  loss_test: np.ndarray | None = None

  def get_loss_train(self) -> np.ndarray:
    return self._loss("train")

  def get_loss_test(self) -> np.ndarray:
    return self._loss("test")

  def _loss(self, split: str) -> np.ndarray:
    given = getattr(self, f"loss_{split}")
    if given is not None:
      return _metrics.check_scores(f"loss_{split}", given)
    logits = getattr(self, f"logits_{split}")
    labels = getattr(self, f"labels_{split}")
    if logits is None or labels is None:
      raise ValueError(f"AttackInputData: loss_{split} is None and so is "
                       f"logits_{split} or labels_{split}; give the losses or "
                       "the logits and labels")
    return _metrics.check_scores(
        f"loss_{split} (from logits_{split})",
        np.asarray(loss(np.asarray(logits), np.asarray(labels))))

  def get_score_train(self, name: str) -> np.ndarray:
    return self._score(name, "train")

  def get_score_test(self, name: str) -> np.ndarray:
    return self._score(name, "test")

  def _score(self, name: str, split: str) -> np.ndarray:
    if name == "loss":
      return self._loss(split)
    logits = getattr(self, f"logits_{split}")
    labels = getattr(self, f"labels_{split}")
    if logits is None or labels is None:
      raise ValueError(f"AttackInputData: score {name!r} needs logits_{split} "
                       f"and labels_{split}")
    return _metrics.check_scores(f"{name}_{split}", np.asarray(
        score(name, np.asarray(logits), np.asarray(labels))))


def threshold_attack(data: AttackInputData,
                     score_name: str = "loss") -> _metrics.AttackResult:
  """Global threshold attack on one score (Yeom et al., CSF 2018).

  Membership score = -loss for "loss" (low loss => member), the score itself
  for "confidence" and "logit_scaled_confidence". Every threshold is
  evaluated: the result holds the whole ROC.
  """
  s_in = data.get_score_train(score_name)
  s_out = data.get_score_test(score_name)
  if score_name == "loss":
    s_in, s_out = -s_in, -s_out
  return _metrics.evaluate_attack(f"threshold[{score_name}]", s_in, s_out)
