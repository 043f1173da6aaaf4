"""Contextualized Embedding Association Test (Guo & Caliskan, AIES 2021).

"Detecting Emergent Intersectional Biases: Contextualized Word Embeddings
Contain a Distribution of Human-like Biases", arXiv:2006.03955.

Each word w of a WEAT test has many contextual embeddings (one per sentence
containing w; see `trustjax.fairness.embeddings`). Sample i = 1..N draws one
embedding per word uniformly at random and computes the WEAT effect size
ES_i on that draw, and its in-sample variance V_i. The N samples are then
combined by a random-effects meta-analysis:

  W_i   = 1 / V_i
  Q     = sum W_i ES_i^2 - (sum W_i ES_i)^2 / sum W_i
  c     = sum W_i - sum W_i^2 / sum W_i
  tau^2 = max(0, (Q - (N - 1)) / c)            (DerSimonian & Laird, 1986)
  v_i   = 1 / (V_i + tau^2)
  CES   = sum v_i ES_i / sum v_i               (combined effect size)
  SE    = sqrt(1 / sum v_i)
  p     = 2 (1 - Phi(|CES / SE|))              (two-sided, as in the paper)

In-sample variance V_i (`variance=`):
- "association" (default, the paper's choice): the sample variance
  (ddof=1) of s(w, A, B) over w in X u Y in sample i, i.e. the square of
  the effect size's denominator.
- "cohen_d": the large-sample variance of a standardised mean difference
  (Hedges & Olkin 1985), (nx + ny) / (nx ny) + ES_i^2 / (2 (nx + ny)).

Note: the N samples reuse the same sentences, so they are not independent
studies; with N large the SE is small and p is tiny whenever the expected
effect over contexts is non-zero. Read CES as an effect size first.

Sampling is jittable and batched: all embeddings are packed into one table,
sample i's indices are drawn with `jax.random`, and effect sizes are
computed in chunks of samples under one `jit` (either from a precomputed
cosine table between target and attribute occurrences, or directly from the
gathered vectors when that table would be large).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from trustjax.fairness.weat import WeatTest
from trustjax.fairness.weat import _unit

VARIANCES = ("association", "cohen_d")
ON_MISSING = ("raise", "skip")


@dataclasses.dataclass(frozen=True)
class MetaResult:
  """Random-effects combination of N effect sizes (see module doc)."""
  ces: float
  se: float
  z: float
  p_value: float
  tau2: float
  q: float
  num_samples: int


def random_effects(effect_sizes, variances) -> MetaResult:
  """DerSimonian-Laird random-effects meta-analysis, float64 on the host.

  Args:
    effect_sizes: ES_i [N], N >= 2.
    variances: in-sample variances V_i [N], all > 0.
  """
  es = np.asarray(effect_sizes, np.float64).reshape(-1)
  v = np.asarray(variances, np.float64).reshape(-1)
  if es.shape != v.shape:
    raise ValueError(f"effect_sizes {es.shape} and variances {v.shape} "
                     "must have the same length")
  if es.size < 2:
    raise ValueError(f"random_effects needs N >= 2 samples; got {es.size}")
  if not (np.all(np.isfinite(es)) and np.all(np.isfinite(v)) and
          np.all(v > 0)):
    raise ValueError("effect_sizes must be finite and variances finite and "
                     "> 0 (a sample whose X u Y associations are all equal "
                     "has no variance)")
  n = es.size
  w = 1.0 / v
  sw = w.sum()
  q = float(np.sum(w * es**2) - np.sum(w * es)**2 / sw)
  c = float(sw - np.sum(w**2) / sw)
  tau2 = max(0.0, (q - (n - 1)) / c) if c > 0 else 0.0
  vs = 1.0 / (v + tau2)
  ces = float(np.sum(vs * es) / vs.sum())
  se = float(np.sqrt(1.0 / vs.sum()))
  z = ces / se
  p = float(2.0 * stats.norm.sf(abs(z)))
  return MetaResult(ces, se, float(z), p, float(tau2), q, n)


@dataclasses.dataclass(frozen=True)
class CEATResult:
  """Per-sample effect sizes/variances [N], their meta-analysis, and the
  words used (after skipping those without embeddings)."""
  effect_sizes: np.ndarray
  variances: np.ndarray
  meta: MetaResult
  pes: float                  # mean of ES_i (the reference code's "PES")
  words: dict
  skipped: dict

  def as_dict(self) -> dict:
    return {"ces": self.meta.ces, "se": self.meta.se, "z": self.meta.z,
            "p_value": self.meta.p_value, "tau2": self.meta.tau2,
            "q": self.meta.q, "pes": self.pes,
            "num_samples": self.meta.num_samples,
            "skipped": {k: list(v) for k, v in self.skipped.items()}}


def resolve_words(test: WeatTest, available, *, on_missing: str = "raise"
                  ) -> tuple[dict, dict]:
  """Words of each set that have embeddings/sentences; the rest skipped.

  Args:
    available: a container of words that have at least one embedding.
    on_missing: "raise": ValueError naming every missing word and its set;
      "skip": drop them (each set must keep >= 1 word, X u Y >= 3).

  Returns:
    ({"X": [...], ...} kept, {"X": [...], ...} skipped).
  """
  if on_missing not in ON_MISSING:
    raise ValueError(f"on_missing={on_missing!r}; valid: {ON_MISSING}")
  kept, skipped = {}, {}
  for k, words in zip("XYAB", (test.X, test.Y, test.A, test.B)):
    kept[k] = [w for w in words if w in available]
    skipped[k] = [w for w in words if w not in available]
  missing = {k: v for k, v in skipped.items() if v}
  if missing and on_missing == "raise":
    raise ValueError(f"test {test.name!r}: no sentence/embedding for "
                     f"{missing}; pass on_missing='skip' to drop them")
  empty = [k for k in "XYAB" if not kept[k]]
  if empty or len(kept["X"]) + len(kept["Y"]) < 3:
    raise ValueError(f"test {test.name!r}: after skipping {missing}, sets "
                     f"{empty or 'X u Y'} have too few words to test")
  return kept, skipped


def _pack(embeddings: Mapping[str, np.ndarray], words: Sequence[str]):
  mats = []
  for w in words:
    m = np.asarray(embeddings[w], np.float32)
    if m.ndim == 1:
      m = m[None]
    if m.ndim != 2 or m.shape[0] < 1:
      raise ValueError(f"embeddings[{w!r}] must be [n >= 1, D]; got shape "
                       f"{m.shape}")
    mats.append(m)
  dims = {m.shape[1] for m in mats}
  if len(dims) != 1:
    raise ValueError(f"embedding sizes differ across words: {sorted(dims)}")
  counts = np.array([m.shape[0] for m in mats], np.int32)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  return np.concatenate(mats), offsets, counts


def _es_var(s_x, s_y, variance):
  s = jnp.concatenate([s_x, s_y], -1)
  var_s = jnp.var(s, axis=-1, ddof=1)
  es = (s_x.mean(-1) - s_y.mean(-1)) / jnp.sqrt(var_s)
  if variance == "association":
    return es, var_s
  nx, ny = s_x.shape[-1], s_y.shape[-1]
  return es, (nx + ny) / (nx * ny) + es**2 / (2.0 * (nx + ny))


@functools.partial(jax.jit, static_argnames=("sizes", "variance", "mode"))
def _chunk(key, table, sim, offsets, counts, *, sizes, variance, mode):
  """One chunk of samples: indices [C, W] and (ES, V) [C]."""
  nx, ny, na, nb = sizes
  chunk_n = key.shape[0]
  u = jax.vmap(lambda k: jax.random.uniform(k, counts.shape))(key)
  local = jnp.minimum((u * counts[None]).astype(jnp.int32),
                      counts[None] - 1)
  idx = offsets[None] + local                              # [C, W]
  t_idx, a_idx = idx[:, :nx + ny], idx[:, nx + ny:]
  if mode == "table":
    # sim rows: target occurrences, cols: attribute occurrences
    tgt0 = offsets[0]
    att0 = offsets[nx + ny]
    cos = jax.vmap(lambda ti, ai: sim[ti - tgt0][:, ai - att0])(t_idx, a_idx)
  else:
    vt, va = table[t_idx], table[a_idx]                    # [C, n, D]
    cos = jnp.einsum("cnd,cmd->cnm", vt, va)
  s = cos[..., :na].mean(-1) - cos[..., na:].mean(-1)      # [C, nx+ny]
  es, v = _es_var(s[:, :nx], s[:, nx:], variance)
  del chunk_n
  return idx, es, v


def ceat_samples(embeddings: Mapping[str, np.ndarray], X: Sequence[str],
                 Y: Sequence[str], A: Sequence[str], B: Sequence[str], *,
                 num_samples: int = 10000, seed: int = 0,
                 variance: str = "association", chunk_size: int = 1000,
                 max_table_entries: int = 50_000_000,
                 return_indices: bool = False):
  """Per-sample effect sizes ES_i and in-sample variances V_i.

  Args:
    embeddings: word -> contextual embeddings [n_w, D] (one row per
      occurrence); every word of X, Y, A, B must be present.
    X, Y, A, B: word lists.
    num_samples: N. seed: jax PRNG seed (sample i uses key fold_in(seed, i
      // chunk_size) split per sample).
    variance: "association" or "cohen_d" (module doc).
    chunk_size: samples per jitted call.
    max_table_entries: precompute the cosine table between all target and
      all attribute occurrences when it has at most this many entries.
    return_indices: also return the sampled rows [N, W] into the packed
      table (words in X, Y, A, B order), to check against a reference.

  Returns:
    (es [N], v [N]) float32 numpy, plus (indices, table) when asked.
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; valid: {VARIANCES}")
  if int(num_samples) < 2:
    raise ValueError(f"num_samples={num_samples} must be >= 2")
  words = list(X) + list(Y) + list(A) + list(B)
  missing = [w for w in words if w not in embeddings]
  if missing:
    raise ValueError(f"no embeddings for words {missing}")
  table, offsets, counts = _pack(embeddings, words)
  table = np.asarray(_unit(jnp.asarray(table)))
  sizes = (len(X), len(Y), len(A), len(B))
  nt = int(counts[:sizes[0] + sizes[1]].sum())
  na = int(counts[sizes[0] + sizes[1]:].sum())
  mode = "table" if nt * na <= max_table_entries else "direct"
  sim = (jnp.asarray(table[:nt]) @ jnp.asarray(table[nt:]).T
         if mode == "table" else jnp.zeros((1, 1), jnp.float32))
  table_j = jnp.asarray(table)
  base = jax.random.key(seed)
  es, v, idx = [], [], []
  chunk_size = max(1, min(int(chunk_size), int(num_samples)))
  for start in range(0, int(num_samples), chunk_size):
    n = min(chunk_size, int(num_samples) - start)
    keys = jax.random.split(jax.random.fold_in(base, start // chunk_size),
                            chunk_size)
    i, e, var = _chunk(keys, table_j, sim, jnp.asarray(offsets),
                       jnp.asarray(counts), sizes=sizes, variance=variance,
                       mode=mode)
    es.append(np.asarray(e[:n]))
    v.append(np.asarray(var[:n]))
    if return_indices:
      idx.append(np.asarray(i[:n]))
  es, v = np.concatenate(es), np.concatenate(v)
  if return_indices:
    return es, v, np.concatenate(idx), table
  return es, v


def ceat(embeddings: Mapping[str, np.ndarray], test: WeatTest, *,
         num_samples: int = 10000, seed: int = 0,
         variance: str = "association", on_missing: str = "raise",
         chunk_size: int = 1000) -> CEATResult:
  """CEAT of one test: N samples, then the random-effects combination.

  Args:
    embeddings: word -> contextual embeddings [n_w, D] (e.g. from
      `trustjax.fairness.embeddings.contextual_embeddings`). A word with no
      entry or zero rows is missing.
    test: the word lists (`trustjax.fairness.weat.load_weat_tests()`).
    on_missing: "raise" (ValueError naming the missing words) or "skip"
      (they are dropped and listed in `result.skipped`).
    Other arguments: as in `ceat_samples`.
  """
  available = {w for w, m in embeddings.items() if np.asarray(m).size > 0}
  kept, skipped = resolve_words(test, available, on_missing=on_missing)
  es, v = ceat_samples(embeddings, kept["X"], kept["Y"], kept["A"],
                       kept["B"], num_samples=num_samples, seed=seed,
                       variance=variance, chunk_size=chunk_size)
  meta = random_effects(es, v)
  return CEATResult(es, v, meta, float(np.mean(es)), kept,
                    {k: tuple(s) for k, s in skipped.items()})
