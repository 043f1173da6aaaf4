r"""Time per 1000 CEAT samples: trustjax (jitted, chunked) vs a numpy loop.

  .venv/bin/python benchmarks/ceat_speed.py [--words 8] [--occurrences 200]
      [--dim 768] [--samples 10000]

Synthetic contextual embeddings with GPT-2's width (D=768) and a WEAT 6/7/8
sized test (8 words per set, `--occurrences` embeddings per word). Measures
`trustjax.fairness.ceat_samples` in both modes ("table": cosines between all
target and attribute occurrences precomputed once; "direct": vectors
gathered per sample) after a warm-up call, and the reference
implementation's per-sample numpy loop (github.com/weiguowilliam/CEAT,
`ceat_inter.py`: sklearn-free equivalent, one `effect_size` per sample) on
a few hundred samples. Prints one JSON line.
"""

import argparse
import json
import platform
import time

import jax
import numpy as np

from trustjax.fairness.ceat import ceat_samples


def numpy_reference(emb, sets, num, rng):
  """One effect size per sample, as the reference code computes it."""
  def cos(w, m):
    return (m @ w) / (np.linalg.norm(m, axis=1) * np.linalg.norm(w))

  out = []
  for _ in range(num):
    x, y, a, b = ([emb[w][rng.integers(len(emb[w]))] for w in s]
                  for s in sets)
    a, b = np.array(a), np.array(b)
    s = [cos(w, a).mean() - cos(w, b).mean() for w in x + y]
    out.append((np.mean(s[:len(x)]) - np.mean(s[len(x):])) /
               np.std(s, ddof=1))
  return np.array(out)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--words", type=int, default=8)
  p.add_argument("--occurrences", type=int, default=200)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--samples", type=int, default=10000)
  p.add_argument("--baseline_samples", type=int, default=300)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  sets = [[f"{k}{i}" for i in range(args.words)] for k in "xyab"]
  emb = {w: rng.normal(size=(args.occurrences, args.dim)).astype(np.float32)
         for s in sets for w in s}
  result = {"claim": "ceat_speed", "words_per_set": args.words,
            "occurrences_per_word": args.occurrences, "dim": args.dim,
            "num_samples": args.samples}
  for mode, limit in (("table", 10**12), ("direct", 0)):
    ceat_samples(emb, *sets, num_samples=1000, seed=1,
                 max_table_entries=limit)                      # warm-up
    t0 = time.perf_counter()
    es, _ = ceat_samples(emb, *sets, num_samples=args.samples, seed=0,
                         max_table_entries=limit)
    dt = time.perf_counter() - t0
    assert np.all(np.isfinite(es))
    result[f"trustjax_{mode}_s_per_1000"] = dt / args.samples * 1000
  t0 = time.perf_counter()
  numpy_reference(emb, sets, args.baseline_samples, rng)
  base = (time.perf_counter() - t0) / args.baseline_samples * 1000
  result["numpy_loop_s_per_1000"] = base
  best = min(result["trustjax_table_s_per_1000"],
             result["trustjax_direct_s_per_1000"])
  result["speedup_vs_numpy_loop"] = base / best
  result.update(jax=jax.__version__, backend=jax.default_backend(),
                machine=platform.processor() or platform.machine())
  print(json.dumps(result))


if __name__ == "__main__":
  main()
