r"""Client updates per second: vectorised trustjax rounds vs a sequential
per-client jitted loop (FedJAX's execution model), same run, same clients.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/fl_throughput.py \
      --cohorts=10,100,1000

CLINC150 (synthetic fallback without TRUSTJAX_DATA_DIR) tokenised with the
GPT-2 BPE hashed to 8192 ids, bag-of-embeddings classifier (d=64, hidden 128),
heavy-tailed partition over 2000 clients (log-normal sigma 1.5, Dirichlet
0.5), FedAvg, one local epoch, client batch 16. For each cohort size: the
median of `--repeats` rounds after `--warmup` rounds (each round's cohort
differs, so a new bucket shape can still compile inside a timed round, in
both paths). The sequential
baseline runs the same `client_update` jitted for one client, in a Python
loop, at the same padded shape per size bucket (so it compiles as often as
the vectorised path). Prints one JSON line per cohort size.

Four paths, same cohorts, same run: `vectorised` (`run_round` with
`row_sparse`: each client trains on its own embedding rows; what the
federated job uses), `vectorised_dense` (`run_round` on the full table),
`sequential` (the baseline above, full table: FedJAX's model) and
`sequential_rows` (the baseline given the same row compaction, to show how
much of the gain is vectorisation and how much is compaction). `speedup` is
sequential / vectorised.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from trustjax import federated as fl  # noqa: E402
from trustjax import models  # noqa: E402
from trustjax.experiment import classification  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--cohorts", default="10,100,1000")
  ap.add_argument("--num_clients", type=int, default=2000)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--warmup", type=int, default=3,
                  help="rounds run first (compiling their bucket shapes)")
  ap.add_argument("--max_sequential", type=int, default=1000,
                  help="skip the sequential loops above this cohort size")
  ap.add_argument("--max_dense", type=int, default=1000,
                  help="skip the dense vectorised path above this size")
  args = ap.parse_args()
  cfg = classification.base_config()
  cfg.data.tokenizer = "gpt2"
  cfg.data.max_len = 32
  data = classification.load_data(cfg)
  train = data.arrays["train"]
  assign = fl.heavy_tailed_dirichlet(train["label"], args.num_clients,
                                     alpha=0.5, sigma=1.5, seed=0)
  fed = fl.FederatedData.from_assignment(train, assign, args.num_clients)
  model = models.BagOfEmbeddings(data.vocab_size, data.num_classes,
                                 d_embed=64, d_hidden=128,
                                 rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  alg = fl.fedavg(loss_fn, client_lr=0.1)
  state = alg.server_init(params)
  one_client = jax.jit(alg.client_update)
  kw = dict(batch_size=16, local_epochs=1, seed=0)
  rs = fl.RowSparse(("token_embed", "embedding"), "ids")
  vocab = data.vocab_size

  @jax.jit
  def one_client_rows(state, batches, key, weight, rows):
    # The library's own aggregation for a bucket of one client.
    agg, _, _ = fl.rounds.cohort_aggregate(
        alg, state, jnp.zeros((1,)), batches, weight, jnp.ones((1,)),
        key[None], rows, rs if rows is not None else None)
    return agg["weighted"]

  def sequential(cohort, rnd, compact=False):
    total = None
    for c, w in zip(cohort.clients[cohort.mask], cohort.weights[cohort.mask]):
      n = fed.client_sizes()[c]
      steps = int(fl.local_steps(np.array([n]), 16, 1)[0])
      s_b = 1 if steps <= 1 else 1 << (steps - 1).bit_length()
      idx, mask = fl.client_batch_indices(fed, int(c), steps=s_b,
                                          batch_size=16, local_epochs=1,
                                          seed=0, round=rnd)
      batches = {k: np.where(mask.reshape(mask.shape + (1,) * (v.ndim - 1)),
                             v[idx], 0) for k, v in train.items()}
      batches["example_mask"] = mask
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), rnd),
                               int(c))
      if compact:
        one, rows = fl.rounds.compact_rows(
            {k: v[None] for k, v in batches.items()}, rs, vocab)
        d = one_client_rows(state, one, key, np.array([w], np.float32), rows)
      else:
        upd, _, _ = one_client(state, jnp.zeros(()), batches, key)
        d = jax.tree.map(lambda x: w * x, upd["weighted"])
      total = d if total is None else jax.tree.map(jnp.add, total, d)
    jax.block_until_ready(total)
    return total

  for m in [int(x) for x in args.cohorts.split(",")]:
    paths = {
        "vectorised": lambda c, r: fl.run_round(
            alg, state, fed, c, round=r, row_sparse=rs, **kw),
        "vectorised_dense": lambda c, r: fl.run_round(
            alg, state, fed, c, round=r, **kw),
        "sequential": sequential,
        "sequential_rows": lambda c, r: sequential(c, r, compact=True)}
    times = {k: [] for k in paths}
    for rep in range(args.warmup + args.repeats):
      cohort = fl.select_clients(fed.client_sizes(), m, round=rep, seed=1)
      for name, fn in paths.items():
        if m > args.max_sequential and name.startswith("sequential"):
          continue
        if m > args.max_dense and name == "vectorised_dense":
          continue
        t = time.perf_counter()
        out = fn(cohort, rep)
        jax.block_until_ready(out)
        if rep >= args.warmup:  # warm-up rounds compile most bucket shapes
          times[name].append(time.perf_counter() - t)
        if name == "vectorised":
          metrics = out[2]
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    v = med["vectorised"]
    s = med.get("sequential", float("nan"))
    print(json.dumps({
        "benchmark": "fl_throughput", "cohort": m, "data": data.source,
        **{f"{k}_s": round(t, 4) for k, t in med.items()},
        "vectorised_clients_per_s": round(m / v, 1),
        "sequential_clients_per_s": round(m / s, 1),
        "speedup": round(s / v, 2),
        "speedup_dense": round(s / med.get("vectorised_dense", float("nan")),
                               2),
        "speedup_vs_sequential_rows": round(
            med.get("sequential_rows", float("nan")) / v, 2),
        "padding_efficiency": round(metrics["padding_efficiency"], 3),
        "jax": jax.__version__, "devices": jax.device_count(),
        # The 1-minute load average at the end: compare only same-run
        # ratios when other processes share the CPU.
        "load1": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
  main()
