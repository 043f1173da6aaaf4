"""Canaries: secrets from a pattern, inserted into a data set, and exposure.

Carlini, Liu, Erlingsson, Kos, Song, "The Secret Sharer: Evaluating and
Testing Unintended Memorization in Neural Networks", USENIX Security 2019.
For text classifiers the canary is a labelled utterance (Parikh, Dupuy,
Gupta, "Canary Extraction in Natural Language Understanding Models", ACL
2022): e.g. "my pin code is {d} {d} {d} {d}" with an intent label.

  * `CanaryPattern`: a template with `{d}` slots over an alphabet (digits);
    the candidate space R is every filling, |R| = |alphabet|^slots.
  * `insert_canaries`: appends each canary `repetitions` times to the
    training split of a `TextClassificationData` (other splits untouched).
  * `tokenize_canary`: checks that the tokenizer gives exactly one token per
    slot, the same token for a symbol whatever its neighbours, and distinct
    tokens for distinct symbols; raises ValueError otherwise (e.g. GPT-2 BPE
    merging "1234" into "12" "34"). Returns `CanaryTokens`, which encodes
    any batch of secrets without re-tokenising.
  * Exposure (Secret Sharer, Def. 4): candidates are ranked by the model's
    loss of the canary label (lower = more likely; the classifier's analogue
    of log-perplexity); exposure = log2 |R| - log2 rank(secret). With a
    sample of candidates only, `exposure_skewnorm` fits a skew-normal to
    their losses and reports -log2 CDF(loss of the secret) (Sec. 4.2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
from scipy import special
from scipy import stats

SLOT = "{d}"
DIGITS = "0123456789"


@dataclasses.dataclass(frozen=True)
class CanaryPattern:
  """A canary template: text with `{d}` slots, each filled from `alphabet`.

  A secret is an int[slots] array of indices into `alphabet`; `label` is the
  class id the canary is trained with.
  """
  template: str
  label: int
  alphabet: str = DIGITS

  def __post_init__(self):
    if self.num_slots < 1:
      raise ValueError(f"template={self.template!r} has no {SLOT} slot: a "
                       "canary needs at least one secret symbol")
    if len(set(self.alphabet)) != len(self.alphabet) or len(self.alphabet) < 2:
      raise ValueError(f"alphabet={self.alphabet!r} must have >= 2 distinct "
                       "symbols")
    if int(self.label) < 0:
      raise ValueError(f"label={self.label} must be a class id >= 0")

  @property
  def parts(self) -> list[str]:
    return self.template.split(SLOT)

  @property
  def num_slots(self) -> int:
    return len(self.parts) - 1

  @property
  def num_candidates(self) -> int:
    return len(self.alphabet) ** self.num_slots

  def format(self, secret: Sequence[int]) -> str:
    secret = np.asarray(secret, np.int64)
    if secret.shape != (self.num_slots,) or secret.min() < 0 or \
        secret.max() >= len(self.alphabet):
      raise ValueError(f"secret={secret.tolist()} must be {self.num_slots} "
                       f"indices in [0, {len(self.alphabet)})")
    parts = self.parts
    out = [parts[0]]
    for j, s in enumerate(secret):
      out += [self.alphabet[int(s)], parts[j + 1]]
    return "".join(out)

  def secret_string(self, secret: Sequence[int]) -> str:
    return "".join(self.alphabet[int(s)] for s in secret)

  def all_secrets(self) -> np.ndarray:
    """int[|R|, slots], row r = the base-|alphabet| digits of r (big-endian):
    row index == `secret_index(row)`."""
    a, k = len(self.alphabet), self.num_slots
    r = np.arange(self.num_candidates)
    return np.stack([(r // a ** (k - 1 - j)) % a for j in range(k)], 1)

  def secret_index(self, secrets) -> np.ndarray:
    """Row index of each secret in `all_secrets()`; secrets int[..., slots]."""
    secrets = np.asarray(secrets, np.int64)
    a, k = len(self.alphabet), self.num_slots
    return secrets @ (a ** np.arange(k - 1, -1, -1))

  def random_secrets(self, n: int, seed: int) -> np.ndarray:
    """int[n, slots]: n distinct secrets drawn uniformly without replacement."""
    if not 0 < n <= self.num_candidates:
      raise ValueError(f"n={n} secrets requested; the pattern has "
                       f"{self.num_candidates} candidates")
    rows = np.random.default_rng(seed).choice(self.num_candidates, n,
                                              replace=False)
    return self.all_secrets()[rows]


@dataclasses.dataclass(frozen=True)
class Canary:
  """One secret of a pattern, inserted `repetitions` times (0 = held out:
  a reference canary the model never saw)."""
  pattern: CanaryPattern
  secret: tuple[int, ...]
  repetitions: int

  @property
  def text(self) -> str:
    return self.pattern.format(self.secret)


def make_canaries(pattern: CanaryPattern, repetitions: Sequence[int], *,
                  per_count: int = 1, labels: Sequence[int] | None = None,
                  seed: int = 0) -> list[Canary]:
  """`per_count` canaries with distinct random secrets for each repetition
  count (0 allowed: never inserted, measures the chance level).

  Canaries are ordered by repetition count, then copy. `labels`, if given,
  holds one class id per canary (len(repetitions) * per_count) replacing
  `pattern.label`: canaries of one pattern with different labels make the
  secret the only cue that tells them apart (the setting where classifiers
  memorise secrets; with one shared label the prefix alone predicts it).
  """
  reps = [int(r) for r in repetitions]
  if any(r < 0 for r in reps):
    raise ValueError(f"repetitions={reps} must all be >= 0")
  if per_count < 1:
    raise ValueError(f"per_count={per_count} must be >= 1")
  n = len(reps) * per_count
  if labels is not None and len(labels) != n:
    raise ValueError(f"labels has {len(labels)} entries; need one per canary "
                     f"({len(reps)} repetition counts x per_count={per_count}"
                     f" = {n})")
  secrets = pattern.random_secrets(n, seed)
  out, i = [], 0
  for r in reps:
    for _ in range(per_count):
      pat = (pattern if labels is None else
             dataclasses.replace(pattern, label=int(labels[i])))
      out.append(Canary(pat, tuple(int(s) for s in secrets[i]), r))
      i += 1
  return out


def insert_canaries(data, canaries: Sequence[Canary]):
  """Appends each canary `repetitions` times to `data.train`.

  Args:
    data: a `trustjax.data.TextClassificationData`.
    canaries: canaries whose labels are valid class ids of `data`.

  Returns:
    (new_data, canary_of_row int[N_train_new]): the copy with canaries
    appended after the original training rows (batching shuffles them), and
    for each training row the index of its canary in `canaries`, or -1 for
    original rows. Validation and test splits are unchanged.
  """
  from trustjax.data import Split  # pylint: disable=g-import-not-at-top
  texts = list(data.train.texts)
  labels = [np.asarray(data.train.labels, np.int32)]
  owner = [np.full(len(texts), -1, np.int64)]
  for i, c in enumerate(canaries):
    if not 0 <= c.pattern.label < data.num_classes:
      raise ValueError(f"canary {i} has label {c.pattern.label}; the data "
                       f"set has classes 0..{data.num_classes - 1}")
    texts += [c.text] * c.repetitions
    labels.append(np.full(c.repetitions, c.pattern.label, np.int32))
    owner.append(np.full(c.repetitions, i, np.int64))
  new = dataclasses.replace(
      data, train=Split(texts, np.concatenate(labels)),
      source=data.source + f" + {sum(c.repetitions for c in canaries)} "
      f"canary rows ({len(canaries)} canaries)")
  return new, np.concatenate(owner)


# --------------------------------------------------------------------------
# Tokenisation check
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CanaryTokens:
  """A pattern's verified tokenisation.

  ids int32[T] / mask bool[T]: the canary with every slot = alphabet[0];
  slot_positions int[slots]: the token position of each slot;
  symbol_ids int32[slots, |alphabet|]: token id of each symbol at each slot.
  """
  pattern: CanaryPattern
  ids: np.ndarray
  mask: np.ndarray
  slot_positions: np.ndarray
  symbol_ids: np.ndarray

  def encode(self, secrets) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32[R,T], mask bool[R,T]) of secrets int[R, slots]."""
    secrets = np.asarray(secrets, np.int64)
    ids = np.repeat(self.ids[None], len(secrets), 0)
    for j, p in enumerate(self.slot_positions):
      ids[:, p] = self.symbol_ids[j, secrets[:, j]]
    return ids, np.repeat(self.mask[None], len(secrets), 0)


def _show(tokenizer, text, max_len):
  ids, mask = tokenizer.encode([text], max_len)
  return ids[0][mask[0]].tolist()


def tokenize_canary(pattern: CanaryPattern, tokenizer, max_len: int, *,
                    num_checks: int = 200, seed: int = 0) -> CanaryTokens:
  """Verifies the one-token-per-slot assumption and returns `CanaryTokens`.

  `tokenizer.encode(texts, max_len) -> (ids [N,max_len], mask [N,max_len])`
  (WordVocab, BPEEncoder, the classification job's HashedBPE).

  Raises:
    ValueError: the canary is truncated at max_len; a slot is not exactly
      one token (merged with its neighbours or split); a symbol's token
      depends on the other slots; two symbols share a token id (unknown
      words, hash collisions); or a random secret's encoding differs from
      the slot-wise composition (checked on `num_checks` secrets).
  """
  a, k = len(pattern.alphabet), pattern.num_slots
  base_secret = np.zeros(k, np.int64)
  base_text = pattern.format(base_secret)
  ids0, mask0 = (np.asarray(x)[0] for x in tokenizer.encode([base_text],
                                                           max_len))
  long_ids, long_mask = tokenizer.encode([base_text], max_len + 4 * k + 8)
  if int(np.asarray(long_mask).sum()) > int(mask0.sum()):
    raise ValueError(
        f"canary {base_text!r} has {int(np.asarray(long_mask).sum())} tokens "
        f"but max_len={max_len}: it would be truncated; raise max_len or "
        "shorten the template")
  length = int(mask0.sum())
  symbol_ids = np.zeros((k, a), np.int64)
  positions = []
  texts, keys = [], []
  for j in range(k):
    for s in range(1, a):
      sec = base_secret.copy()
      sec[j] = s
      texts.append(pattern.format(sec))
      keys.append((j, s))
  ids, mask = tokenizer.encode(texts, max_len)
  ids, mask = np.asarray(ids), np.asarray(mask)
  how = ("the attack assumes each " + SLOT + " slot is exactly one token, "
         "whatever its neighbours (put spaces around slots, e.g. "
         "'{d} {d} {d} {d}', or use a word-level tokenizer)")
  slot_pos = {}
  for (j, s), row, m, text in zip(keys, ids, mask, texts):
    diff = np.flatnonzero((row != ids0) & m)
    if int(m.sum()) != length or diff.size > 1:
      raise ValueError(
          f"tokenizer splits canary pattern {pattern.template!r} differently "
          f"from what the attack assumes: {base_text!r} -> "
          f"{_show(tokenizer, base_text, max_len)} but {text!r} -> "
          f"{_show(tokenizer, text, max_len)} (slot {j} is not one token); "
          + how)
    if diff.size == 0:
      raise ValueError(
          f"symbols {pattern.alphabet[0]!r} and {pattern.alphabet[s]!r} in "
          f"slot {j} of {pattern.template!r} give identical token ids "
          f"{_show(tokenizer, text, max_len)} (unknown word or hash "
          "collision): the secret is not recoverable from token ids; use a "
          "tokenizer that knows every symbol")
    p = int(diff[0])
    if slot_pos.setdefault(j, p) != p:
      raise ValueError(
          f"slot {j} of {pattern.template!r} lands on token position "
          f"{slot_pos[j]} for one symbol and {p} for {pattern.alphabet[s]!r}; "
          + how)
    symbol_ids[j, s] = row[p]
  for j in range(k):
    symbol_ids[j, 0] = ids0[slot_pos[j]]
    if len(set(symbol_ids[j].tolist())) != a:
      raise ValueError(
          f"slot {j} of {pattern.template!r}: symbols share token ids "
          f"{symbol_ids[j].tolist()} (unknown words or hash collisions)")
  pos = np.array([slot_pos[j] for j in range(k)])
  if len(set(pos.tolist())) != k:
    raise ValueError(f"slots of {pattern.template!r} share token positions "
                     f"{pos.tolist()}; " + how)
  out = CanaryTokens(pattern=pattern, ids=ids0.astype(np.int32),
                     mask=mask0.astype(bool), slot_positions=pos,
                     symbol_ids=symbol_ids.astype(np.int32))
  # Merges across slots only show with several non-base symbols at once.
  rng = np.random.default_rng(seed)
  n = min(num_checks, pattern.num_candidates)
  secrets = rng.integers(0, a, size=(n, k))
  got, got_mask = tokenizer.encode([pattern.format(s) for s in secrets],
                                   max_len)
  want, want_mask = out.encode(secrets)
  bad = np.flatnonzero(np.any((np.asarray(got) != want) & want_mask, 1)
                       | np.any(np.asarray(got_mask) != want_mask, 1))
  if bad.size:
    text = pattern.format(secrets[bad[0]])
    raise ValueError(
        f"tokenizer splits canary pattern {pattern.template!r} differently "
        f"from what the attack assumes: {text!r} -> "
        f"{_show(tokenizer, text, max_len)}, expected "
        f"{want[bad[0]][want_mask[bad[0]]].tolist()} ({bad.size} of {n} "
        "random secrets differ); " + how)
  return out


# --------------------------------------------------------------------------
# Exposure
# --------------------------------------------------------------------------


def candidate_losses(loss_fn: Callable, tokens: CanaryTokens, secrets=None,
                     *, batch_size: int = 1024) -> np.ndarray:
  """Model loss of the canary label for each candidate secret, f64[R].

  Args:
    loss_fn: `(ids int32[B,T], mask bool[B,T], labels int32[B]) -> f[B]`
      per-example cross entropy (e.g. from `classifier_candidate_loss`).
      Called with fixed-size batches (the last one padded), so a jitted
      function compiles once.
    tokens: the pattern's verified tokenisation.
    secrets: int[R, slots]; None = all |R| candidates in `all_secrets` order.
  """
  secrets = (tokens.pattern.all_secrets() if secrets is None
             else np.asarray(secrets))
  r = len(secrets)
  bs = min(batch_size, r)
  out = np.empty(r, np.float64)
  labels = np.full(bs, tokens.pattern.label, np.int32)
  for start in range(0, r, bs):
    chunk = secrets[start:start + bs]
    pad = bs - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)])
    ids, mask = tokens.encode(chunk)
    vals = np.asarray(loss_fn(ids, mask, labels), np.float64)
    out[start:start + bs - pad] = vals[:bs - pad]
  if not np.isfinite(out).all():
    raise ValueError("candidate losses contain NaN/Inf: the model's loss is "
                     "not finite on some canary candidates")
  return out


def secret_rank(candidate_scores, true_index: int) -> int:
  """1 + the number of candidates with a strictly lower loss than the secret
  (ties favour the secret: the rank an attacker sorting by loss reaches at
  best)."""
  s = np.asarray(candidate_scores, np.float64)
  if not 0 <= true_index < s.size:
    raise ValueError(f"true_index={true_index} outside [0, {s.size})")
  return int(1 + np.sum(s < s[true_index]))


def exposure(candidate_scores, true_index: int) -> float:
  """log2 |R| - log2 rank (Secret Sharer, Def. 4); scores = losses over the
  whole candidate space R (lower = more likely)."""
  s = np.asarray(candidate_scores, np.float64)
  return float(math.log2(s.size) - math.log2(secret_rank(s, true_index)))


def exposure_skewnorm(sample_scores, secret_score: float, *,
                      transform: str = "log") -> float:
  """Exposure extrapolated from a sample of candidate losses (Secret Sharer,
  Sec. 4.2): fit a skew-normal to the (transformed) sample and return
  -log2 Pr[score <= secret's score] under the fit. Can exceed log2 |R|.

  The paper fits log-perplexities, which are unbounded; a classifier's cross
  entropy is bounded below by 0 and piles up there, which a skew-normal
  fits badly. `transform="log"` (default) fits log(loss) instead (monotone,
  so ranks are unchanged); "none" fits the scores as given.
  """
  s = np.asarray(sample_scores, np.float64)
  x = float(secret_score)
  if s.ndim != 1 or s.size < 10 or not np.isfinite(s).all():
    raise ValueError(f"sample_scores must be >= 10 finite losses; got shape "
                     f"{s.shape}")
  if transform == "log":
    if np.any(s <= 0) or x <= 0:
      raise ValueError("transform='log' needs positive losses; pass "
                       "transform='none' for scores that can be <= 0")
    s, x = np.log(s), math.log(x)
  elif transform != "none":
    raise ValueError(f"transform={transform!r}; valid: 'log', 'none'")
  a, loc, scale = stats.skewnorm.fit(s)
  return float(max(0.0, -_skewnorm_logcdf(x, a, loc, scale) / math.log(2.0)))


def _skewnorm_logcdf(x: float, a: float, loc: float, scale: float) -> float:
  """log CDF of a skew-normal, finite far into the lower tail.

  scipy's logcdf is log(cdf) and reaches -inf once the CDF underflows; there
  the CDF integral int_{-inf}^{z} 2 phi(t) Phi(a t) dt is evaluated in log
  space (log-sum-exp of a fine grid over [z - 40, z])."""
  val = float(stats.skewnorm.logcdf(x, a, loc, scale))
  if np.isfinite(val) and val > -30.0:
    return val
  z = (x - loc) / scale
  t = np.linspace(z - 40.0, z, 20001)
  log_f = (math.log(2.0) + stats.norm.logpdf(t) + special.log_ndtr(a * t))
  dt = t[1] - t[0]
  # trapezoid rule: full weight inside, half at the ends
  w = np.full(t.size, math.log(dt))
  w[[0, -1]] += math.log(0.5)
  return float(special.logsumexp(log_f + w))
