"""Federated simulation job: split a data set over clients, run rounds of a
federated algorithm, evaluate on held-out clients.

What `launch/simulate_fl.py` runs. Two tasks (`fl_tasks.py`) share one
round loop:

* text classification (`base_config`, e.g. CLINC150): a partitioner
  (heavy-tailed Dirichlet, Dirichlet, IID) spreads the training split over
  `fl.num_clients` clients; data and model wiring come from the
  classification job (`classification.load_data`, `classification._build`).
* next-character prediction on Tiny Shakespeare (`shakespeare_config`): one
  natural client per speaker-by-segment (`trustjax.data.load_shakespeare`),
  each speech cut into rows of `data.seq_len` characters
  (`trustjax.data.char_sequences`), a small causal `GPT2LMHeadModel` over a
  character vocabulary, loss = next-character cross-entropy summed over a
  row's real targets divided by `seq_len` (padding contributes nothing; a
  batch's masked mean then weighs every real character equally), as in
  LEAF's Shakespeare task (Caldas et al. 2018).

Either way `fl.heldout_clients` clients (a seeded permutation of client ids,
`fl.partition_seed`) never train; the summary gives the distribution over
them of per-client accuracy (for the character task: correct next
characters / characters of the client). Per-round metrics go to
metrics.jsonl; checkpoints (server state, client states, continual store)
resume a stopped run exactly.
"""

from __future__ import annotations

import functools
import json
import os
import time
import numpy as np
from ml_collections import config_dict

from trustjax.experiment import classification
from trustjax.experiment import fl_tasks

ConfigDict = config_dict.ConfigDict
ALGORITHMS = ("fedavg", "fedprox", "fedopt", "scaffold", "dp_fedavg")
PARTITIONS = ("heavy_dirichlet", "dirichlet", "iid")


def _fl_defaults(**overrides) -> ConfigDict:
  fl = dict(
      num_clients=1000, partition="heavy_dirichlet", alpha=0.5, sigma=1.5,
      partition_seed=0, heldout_clients=100, cohort_size=50,
      selection="uniform", power=1.0, rounds=200, local_epochs=3,
      client_batch_size=16, client_lr=1.0, algorithm="fedavg",
      server_lr=1.0, server_optimizer="adam", server_opt_lr=0.01,
      prox_mu=0.01, noise_multiplier=1.0, l2_clip=1.0,
      eval_every=20, num_devices=1,
      # Classification models: each client trains on the embedding rows of
      # its own token ids only (`federated.RowSparse`; same result up to
      # float summation order, much less memory traffic). FedAvg family only.
      row_sparse=False,
      # Continual setting: > 0 spreads each client's examples uniformly over
      # this many rounds of arrivals; clients keep at most `cap` (0: no cap)
      # and delete by `policy` (fifo | random | reservoir).
      continual_rounds=0, cap=0, policy="fifo")
  fl.update(overrides)
  return ConfigDict(fl)


def base_config() -> ConfigDict:
  """Text classification (CLINC150) over partitioned clients."""
  c = classification.base_config()
  c.model.name = "bag"
  c.data.max_len = 32
  c.fl = _fl_defaults()
  return c


def shakespeare_config() -> ConfigDict:
  """Next-character prediction on Tiny Shakespeare, one client per speaker
  within a segment (1194 clients with the shared file)."""
  c = ConfigDict()
  c.seed = 0
  c.data = ConfigDict(dict(
      name="shakespeare",
      data_dir="",        # '' -> $TRUSTJAX_DATA_DIR, then download
      seq_len=80,         # next-character targets per row
      max_clients=0,      # > 0: keep the first N clients in file order
      # > 0: keep each client's first N rows. With min_rows_per_client = N
      # every client has N rows, so a round compiles once whatever the
      # bucketing (the smoke and test runs).
      max_rows_per_client=0,
      min_rows_per_client=1,  # drop clients with fewer rows (LEAF's
                              # --min-samples)
  ))
  c.model = ConfigDict(dict(name="gpt2", n_embd=64, n_layer=2, n_head=4))
  c.eval_batch_size = 256
  c.fl = _fl_defaults(num_clients=0, partition="natural", heldout_clients=120,
                      cohort_size=10, rounds=100, local_epochs=2,
                      client_batch_size=8, client_lr=1.0, eval_every=20)
  return c


def _is_char_task(config: ConfigDict) -> bool:
  return config.data.name == "shakespeare"


def validate(config: ConfigDict, num_clients: int | None = None) -> None:
  """ValueError naming the first invalid `config.fl` field.

  `num_clients` is the population size once known (natural clients); the
  default is `config.fl.num_clients`.
  """
  f = config.fl
  n = f.num_clients if num_clients is None else num_clients
  char = _is_char_task(config)
  checks = [("fl.heldout_clients", f.heldout_clients,
             0 <= f.heldout_clients < n),
            ("fl.cohort_size", f.cohort_size,
             1 <= f.cohort_size <= n - f.heldout_clients),
            ("fl.rounds", f.rounds, f.rounds >= 1),
            ("fl.client_batch_size", f.client_batch_size,
             f.client_batch_size >= 1),
            ("fl.local_epochs", f.local_epochs, f.local_epochs >= 1),
            ("fl.client_lr", f.client_lr, f.client_lr > 0),
            ("fl.eval_every", f.eval_every, f.eval_every >= 1),
            ("fl.algorithm", f.algorithm, f.algorithm in ALGORITHMS),
            ("fl.selection", f.selection,
             f.selection in ("uniform", "activity")),
            ("fl.policy", f.policy,
             f.policy in ("fifo", "random", "reservoir")),
            ("fl.cap", f.cap, f.cap >= 0),
            ("fl.continual_rounds", f.continual_rounds,
             f.continual_rounds >= 0)]
  if char:
    checks += [("fl.partition", f.partition, f.partition == "natural"),
               # GPT-2's LM head is its token embedding: every row moves.
               ("fl.row_sparse", f.row_sparse, not f.row_sparse),
               ("data.seq_len", config.data.seq_len,
                config.data.seq_len >= 1),
               ("data.max_clients", config.data.max_clients,
                config.data.max_clients >= 0),
               ("data.max_rows_per_client", config.data.max_rows_per_client,
                config.data.max_rows_per_client >= 0),
               ("data.min_rows_per_client", config.data.min_rows_per_client,
                config.data.min_rows_per_client >= 1)]
  else:
    checks += [("fl.num_clients", f.num_clients, f.num_clients >= 2),
               ("fl.partition", f.partition, f.partition in PARTITIONS)]
  sized = ("fl.heldout_clients", "fl.cohort_size")
  if num_clients is not None:
    checks = [c for c in checks if c[0] in sized]
  elif char:
    # Natural clients: checked again once the data give their number.
    checks = [c for c in checks if c[0] not in sized]
  for name, value, ok in checks:
    if not ok:
      valid = ("see configs/fl_shakespeare.py" if char else
               "see configs/fl_clinc150.py")
      raise ValueError(
          f"config.{name}={value!r} is invalid ({valid} for valid values; "
          f"population: {n} clients; algorithms: {ALGORITHMS}; partitions: "
          f"{'natural' if char else PARTITIONS})")


def _algorithm(config, loss_fn, n_train):
  keys = ("algorithm", "client_lr", "server_lr", "prox_mu", "server_optimizer",
          "server_opt_lr", "l2_clip", "noise_multiplier", "cohort_size")
  return _cached_algorithm(tuple((k, config.fl[k]) for k in keys),
                           config.seed, loss_fn, n_train)


@functools.lru_cache(maxsize=8)
def _cached_algorithm(fl_items, seed, loss_fn, n_train):
  """The configured algorithm; cached on (settings, loss_fn) so that the
  round programs compiled for it (`rounds.py` caches them per algorithm)
  serve every job of this process with the same model and settings."""
  import optax
  from trustjax import federated as fl
  f = ConfigDict(dict(fl_items))
  if f.algorithm == "fedavg":
    return fl.fedavg(loss_fn, client_lr=f.client_lr, server_lr=f.server_lr)
  if f.algorithm == "fedprox":
    return fl.fedprox(loss_fn, client_lr=f.client_lr, mu=f.prox_mu,
                      server_lr=f.server_lr)
  if f.algorithm == "fedopt":
    opts = {"adam": optax.adam, "yogi": optax.yogi, "adagrad": optax.adagrad,
            "momentum": lambda lr: optax.sgd(lr, momentum=0.9)}
    if f.server_optimizer not in opts:
      raise ValueError(f"config.fl.server_optimizer={f.server_optimizer!r}; "
                       f"valid: {sorted(opts)}")
    return fl.fedopt(loss_fn, client_lr=f.client_lr,
                     server_optimizer=opts[f.server_optimizer](
                         f.server_opt_lr))
  if f.algorithm == "scaffold":
    return fl.scaffold(loss_fn, client_lr=f.client_lr, server_lr=f.server_lr,
                       num_clients=n_train)
  cfg = fl.DPFedAvgConfig(l2_clip=f.l2_clip,
                          noise_multiplier=f.noise_multiplier,
                          num_clients=n_train,
                          expected_cohort=float(f.cohort_size),
                          server_lr=f.server_lr)
  return fl.dp_fedavg(loss_fn, cfg, client_lr=f.client_lr, seed=seed)


def _quantiles(acc: np.ndarray) -> dict:
  have = len(acc) > 0
  return {"heldout_clients_evaluated": int(len(acc)),
          "heldout_acc_mean": float(acc.mean()) if have else None,
          "heldout_acc_p10": float(np.percentile(acc, 10)) if have else None,
          "heldout_acc_p50": float(np.median(acc)) if have else None,
          "heldout_acc_p90": float(np.percentile(acc, 90)) if have else None}


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        stop_after: int | None = None) -> dict:
  """Simulates `fl.rounds` rounds; returns the final summary.

  With `stop_after`, stops after that many rounds of this call (checkpoint
  written) and returns `{"stopped_at": round}`; a later call resumes and
  gives the metrics and summary of an uninterrupted run.

  Many hosts (`trustjax.experiment.multihost`): every process calls `run`
  with `fl.num_devices` equal to the number of devices of all processes;
  the cohort is sharded over all of them, process 0 writes the workdir
  (shared file system) and all processes write the checkpoints together.
  """
  import jax
  from trustjax import experiment as tjx
  from trustjax import federated as fl
  from trustjax.experiment import multihost

  validate(config)
  f = config.fl
  multihost.require_all_devices("fl.num_devices", f.num_devices)
  multihost.prepare_workdir(workdir, config, overwrite=overwrite)
  main = multihost.is_main_process()
  task = (fl_tasks.char_task(config, validate) if _is_char_task(config)
          else fl_tasks.classification_task(
              config, workdir if main else None))
  fed_arrays, n_train = task.arrays, task.num_train
  fed = fl.FederatedData.from_assignment(fed_arrays, task.assign, n_train)
  store = None
  if f.continual_rounds > 0:
    store = fl.ContinualStore(
        task.assign, fl.uniform_arrivals(
            task.assign, f.continual_rounds, seed=f.partition_seed),
        n_train, cap=f.cap or None, policy=f.policy, seed=f.partition_seed)
  if main:
    task.population.plot(os.path.join(workdir, "partition.png"))
    with open(os.path.join(workdir, "partition.json"), "w") as fh:
      json.dump(task.population.statistics(), fh, indent=2)

  alg = _algorithm(config, task.loss_fn, n_train)
  state = alg.server_init(task.params)
  client_states = None
  if alg.uses_client_state:
    client_states = jax.tree.map(
        lambda x: np.zeros((n_train,) + x.shape, x.dtype), task.params)
  ckpt = tjx.Checkpointer(workdir, every_steps=f.eval_every)
  restored = ckpt.restore_latest({"server": state, "clients": client_states})
  start = 0
  if restored is not None:
    start, tree, extra = restored
    if store is not None:
      store.load_state_dict(extra["store"])
    state, client_states = tree["server"], tree["clients"]
  writer = tjx.MetricWriter(workdir, resume_step=start if restored else None)
  mesh = fl.make_client_mesh(f.num_devices) if f.num_devices > 1 else None
  progress = tjx.Progress(f.rounds, initial_step=start, desc="fl",
                          log_every=f.eval_every)
  end = f.rounds if stop_after is None else min(f.rounds, start + stop_after)
  sizes = fed.client_sizes()
  t0 = time.perf_counter()
  for r in range(start, end):
    if store is not None:
      # Clients' holdings this round (arrivals, then deletions).
      store.advance_to(r)
      fed = store.federated_data(fed_arrays)
      sizes = fed.client_sizes()
    if f.algorithm == "dp_fedavg":
      q = f.cohort_size / fed.num_clients
      cohort = fl.poisson_cohort(
          fed.num_clients, q, round=r, seed=config.seed,
          max_cohort_size=int(f.cohort_size + 6 * np.sqrt(f.cohort_size)
                              + 8))
    else:
      cohort = fl.select_clients(
          sizes, f.cohort_size, round=r, seed=config.seed,
          method=f.selection, power=f.power)
    state, client_states, m = fl.run_round(
        alg, state, fed, cohort, batch_size=f.client_batch_size,
        local_epochs=f.local_epochs, seed=config.seed, round=r,
        client_states=client_states, mesh=mesh, row_sparse=task.row_sparse)
    done = r + 1
    if store is not None:
      m["held_examples"] = int(sizes.sum())
    if not np.isfinite(m["client_loss"]):
      raise FloatingPointError(f"round {done}: client loss is not finite; "
                               "lower fl.client_lr")
    if done % f.eval_every == 0 or done == f.rounds:
      m.update({f"val_{k}": v for k, v in
                task.validate_metrics(state["params"]).items()})
      if f.algorithm == "dp_fedavg":
        from trustjax.privacy.accounting import epsilon_from_event
        delta = 1.0 / fed.num_clients ** 1.1
        m["epsilon"] = epsilon_from_event(alg_event(config, fed, done), delta)
      writer.write(done, m)
      progress.update(done, loss=m["client_loss"])
    extra = {"store": store.state_dict()} if store is not None else {}
    ckpt.maybe_save(done, {"server": state, "clients": client_states}, extra,
                    force=(done == end))
  progress.close()
  if end < f.rounds:
    writer.close()
    ckpt.close()
    return {"stopped_at": end}
  acc = task.heldout_accuracy(state["params"])
  summary = {"data": task.source, "algorithm": f.algorithm,
             "selection": f.selection, "rounds": f.rounds,
             "seconds_this_run": round(time.perf_counter() - t0, 1),
             **task.final_metrics(state["params"]), **_quantiles(acc)}
  writer.close()
  ckpt.close()
  if main:
    with open(os.path.join(workdir, "summary.json"), "w") as fh:
      json.dump(summary, fh, indent=2)
  return summary


def alg_event(config, fed, rounds):
  from trustjax.privacy.accounting import dp_sgd_event
  q = config.fl.cohort_size / fed.num_clients
  return dp_sgd_event(config.fl.noise_multiplier, q, rounds)
