"""White-box model inversion: extract a canary's secret from a text classifier
(or a causal language model).

Parikh, Dupuy, Gupta, "Canary Extraction in Natural Language Understanding
Models", ACL 2022: knowing the canary's prefix (the template) and its label,
the attacker optimises the unknown tokens so that the model assigns the
label with the lowest loss. The discrete tokens are relaxed:

  * each secret slot j holds logits theta_j over its candidates (the
    alphabet's tokens, e.g. the 10 digits, or the whole vocabulary);
  * a Gumbel-softmax sample y_j = softmax((theta_j + g) / tau) (Jang et al.,
    ICLR 2017) mixes the candidates' input embeddings into the slot's
    embedding, fed through the model's `inputs_embeds` path;
  * tau is annealed geometrically from `tau_start` to `tau_end`, so samples
    move from smooth mixtures to nearly one-hot vectors; Adam on theta;
  * `num_restarts` independent restarts run side by side (`jax.vmap`), the
    whole optimisation is one jitted `lax.scan`.

The guess of a restart is argmax theta_j per slot, then (`refine_sweeps` > 0)
improved by local search on the exact discrete loss: slot by slot, every
candidate token is tried with the other slots fixed and the best kept
(|candidates| forward passes per slot and restart), then every swap of two
slots' symbols is tried (mean-pooled classifiers see the secret's symbols
almost as a bag, so the relaxed optimum often holds the right symbols in the
wrong order); repeated while the loss drops, at most `refine_sweeps` times.
Only with vocabulary="alphabet".
The reported guess is the restart whose final guess has the lowest model
loss. The rank of the
secret is its position when all |alphabet|^slots candidates are sorted by the
attack's log-probability sum_j log softmax(theta_j) of the chosen restart
(1 = recovered). Random guessing succeeds with probability 1 / |R|.

For a causal LM (GPT-2) the objective is the negative log-likelihood of the
secret and the text after it given the known prefix, the slots' targets
being their relaxed distributions (the label is not used); exposure then
ranks candidates by that log-perplexity, as in the Secret Sharer. The LM
loss is not separable over slots, so the greedy left-to-right decoding over
the candidates joins the restarts as one more starting point.

The tokenisation is verified first (`canaries.tokenize_canary`): a pattern
the tokenizer splits differently from one token per slot is refused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from trustjax.audit.canaries import CanaryTokens

_MAX_ENUMERATE = 2_000_000


@dataclasses.dataclass
class InversionResult:
  """Outcome of one canary extraction.

  guess: int[slots] symbol indices (alphabet) or token ids (vocabulary="full").
  success: guess equals the secret. slot_accuracy: fraction of slots right.
  rank: rank of the secret under the relaxed distribution of the best
    restart (None when the candidate space is too large to enumerate).
  num_candidates: |R|. random_success_rate: 1 / |R|.
  restart_losses: f[R] model loss of each restart's final guess (for a
    causal LM one more row: the greedy decoding's).
  """
  guess: np.ndarray
  guess_text: str
  success: bool
  slot_accuracy: float
  rank: int | None
  num_candidates: int
  random_success_rate: float
  restart_losses: np.ndarray


def _validate(num_restarts, num_steps, tau_start, tau_end, learning_rate,
              vocabulary):
  for name, v in (("num_restarts", num_restarts), ("num_steps", num_steps)):
    if int(v) < 1:
      raise ValueError(f"{name}={v} must be >= 1")
  if not 0 < tau_end <= tau_start:
    raise ValueError(f"need 0 < tau_end <= tau_start; got tau_start="
                     f"{tau_start}, tau_end={tau_end}")
  if learning_rate <= 0:
    raise ValueError(f"learning_rate={learning_rate} must be > 0")
  if vocabulary not in ("alphabet", "full"):
    raise ValueError(f"vocabulary={vocabulary!r}; valid: 'alphabet' (the "
                     "pattern's symbols' tokens) or 'full' (every token)")


def invert_canary(model: nnx.Module, tokens: CanaryTokens, secret=None, *,
                  key: jax.Array, num_restarts: int = 8, num_steps: int = 200,
                  learning_rate: float = 0.1, tau_start: float = 2.0,
                  tau_end: float = 0.1, vocabulary: str = "alphabet",
                  vocab_size: int | None = None,
                  refine_sweeps: int = 2) -> InversionResult:
  """Extracts the secret of `tokens.pattern` from a classifier.

  Args:
    model: an NNX classifier with `embed(ids) -> [B,T,D]` and
      `__call__(ids | None, mask, inputs_embeds=[B,T,D])`
      (TransformerClassifier, BagOfEmbeddings), or a causal LM with
      `embed_tokens`/`lm_head` (trustjax.models.GPT2LMHeadModel); the LM
      objective is the NLL of the secret and the text after it given the
      prefix (the pattern's label is then ignored).
    tokens: verified tokenisation of the pattern (`tokenize_canary`).
    secret: int[slots] true secret (symbol indices), only to score the
      result; None gives success=False and rank=None.
    key: PRNG key (restart inits and Gumbel noise).
    vocabulary: "alphabet" optimises over the pattern's symbol tokens only
      (the attacker knows the secret is digits); "full" over all
      `vocab_size` tokens.

  Returns:
    `InversionResult`.
  """
  _validate(num_restarts, num_steps, tau_start, tau_end, learning_rate,
            vocabulary)
  pattern = tokens.pattern
  k = pattern.num_slots
  if vocabulary == "full":
    if not vocab_size:
      raise ValueError("vocabulary='full' needs vocab_size")
    cand = np.repeat(np.arange(vocab_size, dtype=np.int32)[None], k, 0)
  else:
    cand = tokens.symbol_ids
  graphdef, state = nnx.split(model)
  label = jnp.asarray([pattern.label], jnp.int32)
  mask = jnp.asarray(tokens.mask[None])
  hp = (int(num_restarts), int(num_steps), float(learning_rate),
        float(tau_start), float(tau_end))
  theta, _ = _optimise(graphdef, hp, state, key, jnp.asarray(tokens.ids[None]),
                       mask, jnp.asarray(tokens.slot_positions),
                       jnp.asarray(cand), label)

  first = int(np.min(tokens.slot_positions))
  if _is_lm(model) and first < 1:
    raise ValueError(f"canary pattern {pattern.template!r} starts with a "
                     "secret slot: a causal LM needs a known prefix token "
                     "before the first slot")

  def discrete_losses(st, ids):
    return _discrete_losses(graphdef, st, ids, mask, label, first)

  theta = np.asarray(theta)                     # [R, k, M]
  picks = theta.argmax(-1)                      # [R, k] index into cand
  ids = np.repeat(tokens.ids[None], num_restarts, 0)
  for j, p in enumerate(tokens.slot_positions):
    ids[:, p] = cand[j, picks[:, j]]
  if _is_lm(model):
    # Causal LM: add the greedy left-to-right decoding over the candidates
    # as one more starting point (the LM loss is not separable over slots,
    # so local search alone gets stuck where a wrong early symbol makes the
    # memorised continuation unlikely).
    greedy = _lm_greedy(graphdef, state, tokens, cand, mask)
    picks = np.concatenate([picks, greedy[None]])
    ids = np.concatenate([ids, ids[:1]])
    for j, p in enumerate(tokens.slot_positions):
      ids[-1, p] = cand[j, greedy[j]]
  restart_losses = np.asarray(discrete_losses(state, jnp.asarray(ids)))
  if vocabulary == "alphabet":
    picks, restart_losses = _refine(
        lambda x: np.asarray(discrete_losses(state, jnp.asarray(x))),
        tokens, picks, restart_losses, refine_sweeps)
  best = int(np.argmin(restart_losses))
  guess = picks[best]
  if vocabulary == "full":
    guess_ids = cand[np.arange(k), guess]
    sym = {int(t): s for s, t in enumerate(tokens.symbol_ids[0])}
    guess_text = "".join(pattern.alphabet[sym[int(t)]] if int(t) in sym
                         else "?" for t in guess_ids)
    guess_out = guess_ids
    num_cand = vocab_size ** k
  else:
    guess_text = pattern.secret_string(guess)
    guess_out = guess
    num_cand = pattern.num_candidates
  success, slot_acc, rank = False, float("nan"), None
  if secret is not None:
    secret = np.asarray(secret, np.int64)
    true_cols = (tokens.symbol_ids[np.arange(k), secret]
                 if vocabulary == "full" else secret)
    slot_acc = float(np.mean(guess_out == true_cols))
    success = bool(np.all(guess_out == true_cols))
    # The attack's own ranking: the distribution of the best Gumbel restart
    # (the LM's greedy row has no theta).
    b_theta = int(np.argmin(restart_losses[:num_restarts]))
    logp = jax.nn.log_softmax(theta[b_theta], axis=-1)   # [k, M]
    if num_cand <= _MAX_ENUMERATE:
      rank = _rank_product(np.asarray(logp, np.float64), true_cols)
  return InversionResult(guess=np.asarray(guess_out), guess_text=guess_text,
                         success=success, slot_accuracy=slot_acc, rank=rank,
                         num_candidates=int(num_cand),
                         random_success_rate=1.0 / num_cand,
                         restart_losses=restart_losses)


def _merge(graphdef, st):
  return nnx.merge(graphdef, st)


def _is_lm(model) -> bool:
  return hasattr(model, "embed_tokens") and hasattr(model, "lm_head")


def _embed(model, ids):
  return model.embed_tokens(ids) if _is_lm(model) else model.embed(ids)


def _lm_logp(model, mask, embeds=None, ids=None):
  """log p f32[B,T,V] of the next token at each position (causal LM)."""
  logits = model(ids, attention_mask=mask.astype(jnp.int32),
                 inputs_embeds=embeds)
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _lm_weights(mask, first):
  """f32[B,T-1]: position t predicts token t+1; only tokens from the first
  secret slot on count (the prefix's likelihood is the same for every
  candidate)."""
  t = mask.shape[-1]
  keep = (jnp.arange(1, t) >= first)[None] & mask[:, 1:].astype(bool)
  return keep.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _optimise(graphdef, hp, st, key, base_ids, mask, positions, cand, label):
  """Gumbel-softmax relaxation, `num_restarts` restarts vmapped, one scan.

  Compiled once per (model graph, hyperparameters, shapes) and reused for
  every canary. Returns theta f32[R, k, M] and the mean loss per step.
  """
  num_restarts, num_steps, learning_rate, tau_start, tau_end = hp
  tx = optax.adam(learning_rate)

  def restart_loss(theta, g, tau):
    model = _merge(graphdef, st)
    cand_emb = _embed(model, cand)                        # [k, M, D]
    base = _embed(model, base_ids)                        # [1, T, D]
    y = jax.nn.softmax((theta + g) / tau, axis=-1)        # [k, M]
    slot_emb = jnp.einsum("km,kmd->kd", y, cand_emb)
    embeds = base.at[0, positions].set(slot_emb.astype(base.dtype))
    if not _is_lm(model):
      logits = model(None, mask, inputs_embeds=embeds)
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             label)[0]
    # Causal LM: expected NLL of the sequence from the first slot on, the
    # slots' targets being their relaxed distributions y_j.
    logp = _lm_logp(model, mask, embeds=embeds)[0]        # [T, V]
    tok = jnp.take_along_axis(logp[:-1], base_ids[0, 1:, None], -1)[:, 0]
    slot_ll = jnp.sum(y * logp[positions - 1][jnp.arange(cand.shape[0])[
        :, None], cand], axis=-1)                         # [k]
    tok = tok.at[positions - 1].set(slot_ll)
    w = _lm_weights(mask, jnp.min(positions))[0]
    return -jnp.dot(tok, w)

  k_init, k_loop = jax.random.split(key)
  theta = 0.01 * jax.random.normal(k_init, (num_restarts,) + cand.shape)
  opt = jax.vmap(tx.init)(theta)
  grad = jax.vmap(jax.value_and_grad(restart_loss), in_axes=(0, 0, None))
  decay = (tau_end / tau_start) ** (1.0 / max(num_steps - 1, 1))

  def body(carry, t):
    theta, opt = carry
    tau = tau_start * decay ** t
    g = jax.random.gumbel(jax.random.fold_in(k_loop, t), theta.shape)
    loss, gr = grad(theta, g, tau)
    upd, opt = jax.vmap(tx.update)(gr, opt, theta)
    return (optax.apply_updates(theta, upd), opt), jnp.mean(loss)
  (theta, _), losses = jax.lax.scan(body, (theta, opt),
                                    jnp.arange(num_steps, dtype=jnp.float32))
  return theta, losses


@functools.partial(jax.jit, static_argnums=0)
def _discrete_losses(graphdef, st, ids, mask, label, first):
  """Exact loss f32[B] of token ids int32[B, T]: the canary label's cross
  entropy (classifier), or the NLL of the tokens from position `first` on
  (causal LM: the secret and what follows it)."""
  model = _merge(graphdef, st)
  mask = jnp.broadcast_to(mask, ids.shape)
  if not _is_lm(model):
    logits = model(ids, mask)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(label, ids.shape[:1]))
  logp = _lm_logp(model, mask, ids=ids)
  tok = jnp.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]
  return -jnp.sum(tok * _lm_weights(mask, first), axis=-1)


def _lm_greedy(graphdef, st, tokens: CanaryTokens, cand: np.ndarray,
               mask) -> np.ndarray:
  """int[k]: slot by slot, the candidate with the highest next-token
  probability given the prefix and the slots chosen so far."""
  ids = np.array(tokens.ids[None])
  out = np.zeros(len(tokens.slot_positions), np.int64)
  for j, p in enumerate(tokens.slot_positions):
    logp = np.asarray(_lm_logp_jit(graphdef, st, jnp.asarray(ids), mask))
    out[j] = int(np.argmax(logp[0, p - 1, cand[j]]))
    ids[0, p] = cand[j, out[j]]
  return out


@functools.partial(jax.jit, static_argnums=0)
def _lm_logp_jit(graphdef, st, ids, mask):
  return _lm_logp(_merge(graphdef, st), mask, ids=ids)


def canary_loss_fn(model: nnx.Module, tokens: CanaryTokens):
  """`(ids, mask, labels) -> f32[B]` for `canaries.candidate_losses`: the
  label's cross entropy for a classifier, the log-perplexity of the secret
  and the text after it (Secret Sharer) for a causal LM."""
  graphdef, state = nnx.split(model)
  first = int(np.min(tokens.slot_positions))

  def fn(ids, mask, labels):
    return _discrete_losses(graphdef, state, jnp.asarray(ids),
                            jnp.asarray(mask), jnp.asarray(labels[:1]),
                            first)
  return fn


def _refine(loss_of_ids, tokens: CanaryTokens, picks: np.ndarray,
            losses: np.ndarray, sweeps: int):
  """Local search on the exact loss over symbol indices, all restarts at
  once (single-slot changes, then pairwise swaps): picks int[R, k] ->
  (picks, losses f[R])."""
  r, k = picks.shape
  a = tokens.symbol_ids.shape[1]
  pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]

  def try_moves(trial, picks, losses):
    m = trial.shape[1]
    ids, _ = tokens.encode(trial.reshape(r * m, k))
    vals = loss_of_ids(ids).reshape(r, m)
    best = vals.argmin(1)
    better = vals[np.arange(r), best] < losses - 1e-7
    picks = np.where(better[:, None], trial[np.arange(r), best], picks)
    losses = np.where(better, vals[np.arange(r), best], losses)
    return picks, losses, bool(better.any())

  for _ in range(sweeps):
    changed = False
    for j in range(k):
      trial = np.repeat(picks[:, None, :], a, 1)          # [R, A, k]
      trial[:, :, j] = np.arange(a)[None]
      picks, losses, c = try_moves(trial, picks, losses)
      changed |= c
    if pairs:
      trial = np.repeat(picks[:, None, :], len(pairs), 1)  # [R, P, k]
      for p, (i, j) in enumerate(pairs):
        trial[:, p, [i, j]] = picks[:, [j, i]]
      picks, losses, c = try_moves(trial, picks, losses)
      changed |= c
    if not changed:
      break
  return picks, losses


def _rank_product(logp: np.ndarray, true_cols: np.ndarray) -> int:
  """1 + #candidates whose summed per-slot log-prob is strictly larger than
  the secret's; logp f[k, M] (independent slots)."""
  total = np.zeros(1)
  for j in range(logp.shape[0]):
    total = (total[:, None] + logp[j][None, :]).reshape(-1)
  true = float(sum(logp[j, c] for j, c in enumerate(true_cols)))
  return int(1 + np.sum(total > true + 1e-12))


def invert_canaries(model: nnx.Module, tokens_and_secrets, *, key: jax.Array,
                    **kwargs: Any) -> list[InversionResult]:
  """`invert_canary` for each (tokens, secret) pair, keys folded per canary."""
  return [invert_canary(model, t, s, key=jax.random.fold_in(key, i), **kwargs)
          for i, (t, s) in enumerate(tokens_and_secrets)]
