"""A differentially private word vocabulary (DP partition selection).

A vocabulary built from the private training set is itself a release: a word
that occurs in one example (a name, an account number) ends up in the
tokenizer and is visible to anyone who gets the model. `dp_vocabulary` makes
the vocabulary part of the guarantee with the Gaussian thresholding mechanism
for set union / partition selection (Korolova et al. 2009, "Releasing Search
Queries and Clicks Privately"; Gopi et al. 2020, "Differentially Private Set
Union"; Wilkins et al. 2024, "Exact Privacy Analysis of the Gaussian Sparse
Histogram Mechanism"):

1. Contribution bounding: each example contributes the set of its distinct
   words; if it has more than k = `max_words_per_example`, a uniformly random
   subset of k is kept.
2. Count, for each word that occurs, the number of examples containing it;
   the count vector has l2 sensitivity sqrt(k) under add/remove of one
   example.
3. Add N(0, s^2) with s = z * sqrt(k) to each count and release the words whose
   noisy count exceeds tau = 1 + s * Phi^{-1}((1 - delta_t)^(1/k)).

Guarantee ((epsilon, delta)-DP, add/remove-one adjacency). Split delta =
delta_g + delta_t (`threshold_delta_fraction` gives delta_t). z is the
smallest noise multiplier for which the Gaussian mechanism with sensitivity
1 is (epsilon, delta_g)-DP (analytic Gaussian mechanism, Balle & Wang 2018,
via dp_accounting.get_sigma_gaussian). For D' = D + x, the words of x split
into W1 (also in D, counts differ by 1) and W2 (count 1 in D', absent from D,
at most k of them). On W1 the release is post-processing of a Gaussian
mechanism with sensitivity <= sqrt(k) and std s, hence (epsilon, delta_g);
a word of W2 is released with probability P[1 + N(0, s^2) > tau], so some
word of W2 is released with probability <= 1 - Phi((tau - 1)/s)^k = delta_t.
Both directions then give (epsilon, delta_g + delta_t) (the D -> D' direction
pays only P[N(0, s^2) > tau] <= delta_t). In particular a word that occurs in
a single example is released with probability 1 - (1 - delta_t)^(1/k), about
delta_t / k.

Composition with training: the vocabulary and the model are two releases on
the same data, so the total is (eps_vocab + eps_train, delta_vocab +
delta_train) by basic composition. `composed_epsilon` is tighter: it composes
the Gaussian part (`gaussian_event`) with the training events in the
accountant (PLD by default) at delta - delta_t and pays the threshold as
follows. For D' = D + x, write the vocabulary's output on D' as the mixture
(1 - p) Q_E + p Q_N over the event E "no word of W2 is released", p <= delta_t
(the W2 noise is independent of the rest, so Q_E is the release with W2
suppressed, a Gaussian mechanism on the W1 counts as above, mixed over x's
random word subset). Any later mechanism that reads the vocabulary (training
on tokens encoded with it) is applied to both sides alike. With A the
accountant's epsilon for Gaussian(z) composed (adaptively: Zhu, Dong & Wang
2022, "Optimal Accounting of Differential Privacy via Characteristic
Function") with the rest at delta_a = delta - delta_t, and joint convexity of
the hockey-stick divergence over the mixtures:
  * remove direction: Q(S) - e^A P(S) <= [Q_E(S) - e^A P(S)] + p
    <= delta_a + delta_t = delta;
  * add direction: P(S) - e^eps Q(S) <= P(S) - e^eps (1 - delta_t) Q_E(S), which
    is <= delta_a for eps = A - log(1 - delta_t).
So the composed release is (A - log(1 - delta_t), delta)-DP; the log term is
about delta_t (~1e-6), kept for rigour.

Caveat: noise comes from numpy's PCG64 and floating point Gaussians, as in
the rest of trustjax's host-side code; this is not hardened against
floating-point attacks (Mironov 2012) or a known seed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Iterable, Sequence

import dp_accounting
from dp_accounting import dp_event as dpe
import numpy as np
from scipy import stats

from trustjax.privacy import accounting

# Same rule as trustjax.data.vocab.tokenize_words (kept local: privacy/
# depends on nothing else in trustjax).
_WORD = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)


def tokenize_words(text: str) -> list[str]:
  """Lower-cased words and single punctuation marks."""
  return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class DpVocabulary:
  """Result of `dp_vocabulary`.

  Attributes:
    words: released words, by decreasing noisy count (ties by word).
    noisy_counts: float64[len(words)], their noisy counts (part of the same
      release, covered by the guarantee).
    epsilon, delta: the (epsilon, delta)-DP guarantee of the release
      (add/remove one example); compose basically with training.
    noise_std: s, std of the noise on each count.
    threshold: tau, release threshold on noisy counts.
    max_words_per_example: k.
    gaussian_event: GaussianDpEvent(s / sqrt(k)), the Gaussian part, for
      PLD composition; the total delta then must include `threshold_delta`.
    threshold_delta: delta_t, bound on the probability that some word held by
      only the added example is released.
  """
  words: list[str]
  noisy_counts: np.ndarray
  epsilon: float
  delta: float
  noise_std: float
  threshold: float
  max_words_per_example: int
  gaussian_event: dpe.DpEvent
  threshold_delta: float


def gaussian_threshold(noise_std: float, max_words_per_example: int,
                       threshold_delta: float) -> float:
  """tau = 1 + s * Phi^-1((1 - delta_t)^(1/k)).

  Chosen so that k words each of count 1 all stay below tau with probability
  >= 1 - delta_t.
  """
  k = max_words_per_example
  p_word = -math.expm1(math.log1p(-threshold_delta) / k)  # 1 - (1-d)^(1/k)
  return 1.0 + noise_std * float(stats.norm.isf(p_word))


def dp_vocabulary(texts: Iterable[str],
                  *,
                  epsilon: float,
                  delta: float,
                  max_words_per_example: int,
                  seed: int,
                  tokenize: Callable[[str], Sequence[str]] = tokenize_words,
                  threshold_delta_fraction: float = 0.5,
                  max_size: int | None = None) -> DpVocabulary:
  """An (epsilon, delta)-DP vocabulary of `texts` (see module docstring).

  Args:
    texts: the private examples, one string each (one example = one unit of
      privacy; if a user owns several examples, join them first).
    epsilon: > 0.
    delta: in (0, 1); the caller should keep it < 1/len(texts).
    max_words_per_example: k >= 1, distinct words kept per example.
    seed: seeds `np.random.default_rng(seed)` (contribution bounding and noise).
    tokenize: text -> words; default matches trustjax.data's WordVocab.
    threshold_delta_fraction: share of delta spent on the threshold, in (0, 1).
    max_size: keep at most this many words (the top noisy counts;
      post-processing, free).

  Returns:
    `DpVocabulary`.
  """
  eps = accounting._check_positive("epsilon", epsilon)
  delta = accounting._check_delta(delta)
  k = accounting._check_int("max_words_per_example", max_words_per_example, 1)
  frac = float(threshold_delta_fraction)
  if not 0.0 < frac < 1.0:
    raise ValueError(f"threshold_delta_fraction={threshold_delta_fraction!r} "
                     "must be in (0, 1).")
  if max_size is not None:
    accounting._check_int("max_size", max_size, 1)
  delta_t = delta * frac
  delta_g = delta - delta_t
  z = float(dp_accounting.get_sigma_gaussian(eps, delta_g))
  noise_std = z * math.sqrt(k)
  tau = gaussian_threshold(noise_std, k, delta_t)

  rng = np.random.default_rng(seed)
  counts: dict[str, int] = {}
  for text in texts:
    if not isinstance(text, str):
      raise ValueError(f"texts must hold strings, got {type(text).__name__}.")
    words = sorted(set(tokenize(text)))
    if len(words) > k:
      words = [words[i] for i in rng.choice(len(words), k, replace=False)]
    for w in words:
      counts[w] = counts.get(w, 0) + 1

  vocab = sorted(counts)
  noisy = (np.array([counts[w] for w in vocab], np.float64)
           + rng.normal(0.0, noise_std, size=len(vocab)))
  keep = noisy > tau
  kept = [(-c, w) for w, c, ok in zip(vocab, noisy, keep) if ok]
  kept.sort()
  if max_size is not None:
    kept = kept[:max_size]
  return DpVocabulary(
      words=[w for _, w in kept],
      noisy_counts=np.array([-c for c, _ in kept], np.float64),
      epsilon=eps, delta=delta, noise_std=noise_std, threshold=tau,
      max_words_per_example=k, gaussian_event=dpe.GaussianDpEvent(z),
      threshold_delta=delta_t)


def accountant_target(epsilon: float, delta: float,
                      threshold_delta: float) -> tuple[float, float]:
  """(epsilon', delta') the accountant must meet for a composed total.

  A composition of a `DpVocabulary`'s `gaussian_event` with other events is
  (epsilon, delta)-DP when the accountant gives epsilon' = epsilon +
  log(1 - threshold_delta) at delta' = delta - threshold_delta (module
  docstring). Raises ValueError when threshold_delta >= delta.
  """
  eps = accounting._check_positive("epsilon", epsilon)
  delta = accounting._check_delta(delta)
  dt = accounting._check_positive("threshold_delta", threshold_delta,
                                  allow_zero=True)
  if dt >= delta:
    raise ValueError(f"threshold_delta={threshold_delta!r} must be smaller "
                     f"than the total delta={delta!r}: the vocabulary's "
                     "threshold would use the whole delta")
  return eps + math.log1p(-dt), delta - dt


def composed_epsilon(event: dpe.DpEvent, delta: float,
                     threshold_delta: float, *,
                     accountant: str = "pld") -> float:
  """Epsilon at total `delta` of `event`, which composes a vocabulary's
  `gaussian_event` with other mechanisms (e.g. DP-SGD training).

  Returns A - log(1 - threshold_delta), A = the accountant's epsilon of
  `event` at delta - threshold_delta (proof in the module docstring). With
  threshold_delta = 0 this is the accountant's epsilon at `delta`.
  """
  delta = accounting._check_delta(delta)
  dt = accounting._check_positive("threshold_delta", threshold_delta,
                                  allow_zero=True)
  if dt >= delta:
    raise ValueError(f"threshold_delta={threshold_delta!r} must be smaller "
                     f"than the total delta={delta!r}")
  eps = accounting.epsilon_from_event(event, delta - dt,
                                      accountant=accountant)
  return eps - math.log1p(-dt)
