"""Federated simulation job: partition a classification set over clients,
run rounds of a federated algorithm, evaluate on held-out clients.

What `launch/simulate_fl.py` runs. Reuses the classification job's data and
model wiring (`classification.load_data`, `classification._build`), the
workdir/metrics/checkpoint plumbing, and `trustjax.federated` for the rest.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from ml_collections import config_dict

from trustjax.experiment import classification

ConfigDict = config_dict.ConfigDict
ALGORITHMS = ("fedavg", "fedprox", "fedopt", "scaffold", "dp_fedavg")


def base_config() -> ConfigDict:
  c = classification.base_config()
  c.model.name = "bag"
  c.data.max_len = 32
  c.fl = ConfigDict(dict(
      num_clients=1000, partition="heavy_dirichlet", alpha=0.5, sigma=1.5,
      partition_seed=0, heldout_clients=100, cohort_size=50,
      selection="uniform", power=1.0, rounds=200, local_epochs=3,
      client_batch_size=16, client_lr=1.0, algorithm="fedavg",
      server_lr=1.0, server_optimizer="adam", server_opt_lr=0.01,
      prox_mu=0.01, noise_multiplier=1.0, l2_clip=1.0,
      eval_every=20, num_devices=1,
      # Continual setting: > 0 spreads each client's examples uniformly over
      # this many rounds of arrivals; clients keep at most `cap` (0: no cap)
      # and delete by `policy` (fifo | random | reservoir).
      continual_rounds=0, cap=0, policy="fifo"))
  return c


def validate(config: ConfigDict) -> None:
  f = config.fl
  checks = [("fl.num_clients", f.num_clients, f.num_clients >= 2),
            ("fl.heldout_clients", f.heldout_clients,
             0 <= f.heldout_clients < f.num_clients),
            ("fl.cohort_size", f.cohort_size,
             1 <= f.cohort_size <= f.num_clients - f.heldout_clients),
            ("fl.rounds", f.rounds, f.rounds >= 1),
            ("fl.client_batch_size", f.client_batch_size,
             f.client_batch_size >= 1),
            ("fl.local_epochs", f.local_epochs, f.local_epochs >= 1),
            ("fl.client_lr", f.client_lr, f.client_lr > 0),
            ("fl.algorithm", f.algorithm, f.algorithm in ALGORITHMS),
            ("fl.policy", f.policy,
             f.policy in ("fifo", "random", "reservoir")),
            ("fl.cap", f.cap, f.cap >= 0),
            ("fl.partition", f.partition,
             f.partition in ("heavy_dirichlet", "dirichlet", "iid"))]
  for name, value, ok in checks:
    if not ok:
      raise ValueError(f"config.{name}={value!r} is invalid (see "
                       "configs/fl_clinc150.py for valid values; algorithms: "
                       f"{ALGORITHMS})")


def _partition(config, labels):
  from trustjax import federated as fl
  f = config.fl
  if f.partition == "iid":
    return fl.iid(len(labels), f.num_clients, seed=f.partition_seed)
  if f.partition == "dirichlet":
    return fl.dirichlet_label_skew(labels, f.num_clients, alpha=f.alpha,
                                   seed=f.partition_seed, min_size=1)
  return fl.heavy_tailed_dirichlet(labels, f.num_clients, alpha=f.alpha,
                                   sigma=f.sigma, seed=f.partition_seed)


def _algorithm(config, loss_fn):
  import optax
  from trustjax import federated as fl
  f = config.fl
  n_train = f.num_clients - f.heldout_clients
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
  return fl.dp_fedavg(loss_fn, cfg, client_lr=f.client_lr, seed=config.seed)


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        stop_after: int | None = None) -> dict:
  """Simulates `fl.rounds` rounds; returns the final summary."""
  import jax
  from trustjax import experiment as tjx
  from trustjax import federated as fl

  classification.validate_config(config)
  validate(config)
  f = config.fl
  tjx.prepare_workdir(workdir, config, overwrite=overwrite)
  data = classification.load_data(config, workdir)
  train = data.arrays["train"]
  assign = _partition(config, train["label"])
  population = fl.FederatedData.from_assignment(train, assign, f.num_clients)
  # The last `heldout_clients` client ids (after a seeded shuffle) are
  # evaluation clients: never selected for training.
  perm = np.random.default_rng([f.partition_seed, 7]).permutation(
      f.num_clients)
  heldout = np.sort(perm[:f.heldout_clients])
  train_ids = np.sort(perm[f.heldout_clients:])
  sub_assign = np.full(len(assign), -1)
  remap = {c: i for i, c in enumerate(train_ids)}
  keep = np.isin(assign, train_ids)
  sub_assign[keep] = [remap[c] for c in assign[keep]]
  train_rows = np.flatnonzero(keep)
  fed_arrays = {k: v[train_rows] for k, v in train.items()}
  fed = fl.FederatedData.from_assignment(fed_arrays, sub_assign[keep],
                                         len(train_ids))
  store = None
  if f.continual_rounds > 0:
    store = fl.ContinualStore(
        sub_assign[keep], fl.uniform_arrivals(
            sub_assign[keep], f.continual_rounds, seed=f.partition_seed),
        len(train_ids), cap=f.cap or None, policy=f.policy,
        seed=f.partition_seed)
  population.plot(os.path.join(workdir, "partition.png"))
  with open(os.path.join(workdir, "partition.json"), "w") as fh:
    json.dump(population.statistics(), fh, indent=2)

  params, loss_fn, predict = classification._build(config, data)
  alg = _algorithm(config, loss_fn)
  state = alg.server_init(params)
  client_states = None
  if alg.uses_client_state:
    client_states = jax.tree.map(
        lambda x: np.zeros((fed.num_clients,) + x.shape, x.dtype), params)
  ckpt = tjx.Checkpointer(workdir, every_steps=max(1, f.eval_every))
  template = {"server": state, "clients": client_states}
  restored = ckpt.restore_latest(template)
  start = 0
  if restored is not None:
    start, tree, extra = restored
    if store is not None:
      store.load_state_dict(extra["store"])
    state, client_states = tree["server"], tree["clients"]
  writer = tjx.MetricWriter(workdir, resume_step=start if restored else None)
  mesh = fl.make_client_mesh(f.num_devices) if f.num_devices > 1 else None
  progress = tjx.Progress(f.rounds, initial_step=start, desc="fl",
                          log_every=max(1, f.eval_every))
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
          method="activity" if f.selection == "activity" else "uniform",
          power=f.power)
    state, client_states, m = fl.run_round(
        alg, state, fed, cohort, batch_size=f.client_batch_size,
        local_epochs=f.local_epochs, seed=config.seed, round=r,
        client_states=client_states, mesh=mesh)
    done = r + 1
    if store is not None:
      m["held_examples"] = int(sizes.sum())
    if not np.isfinite(m["client_loss"]):
      raise FloatingPointError(f"round {done}: client loss is not finite; "
                               "lower fl.client_lr")
    if done % f.eval_every == 0 or done == f.rounds:
      ev = classification.evaluate(predict, state["params"],
                                   data.arrays["val"],
                                   config.eval_batch_size, data.oos_label)
      m.update({f"val_{k}": v for k, v in ev.items()})
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
  per_client = []
  for c in heldout:
    idx = population.client_indices(int(c))
    if len(idx):
      rows = {k: v[idx] for k, v in train.items()}
      per_client.append(classification.evaluate(
          predict, state["params"], rows, config.eval_batch_size,
          None)["accuracy"])
  acc = np.array(per_client)
  test = classification.evaluate(predict, state["params"],
                                 data.arrays["test"], config.eval_batch_size,
                                 data.oos_label)
  summary = {"data": data.source, "algorithm": f.algorithm,
             "selection": f.selection, "rounds": f.rounds,
             "seconds_this_run": round(time.perf_counter() - t0, 1),
             **{f"test_{k}": v for k, v in test.items()},
             "heldout_clients_evaluated": int(len(acc)),
             "heldout_acc_mean": float(acc.mean()) if len(acc) else None,
             "heldout_acc_p10": float(np.percentile(acc, 10)) if len(acc)
             else None,
             "heldout_acc_p50": float(np.median(acc)) if len(acc) else None,
             "heldout_acc_p90": float(np.percentile(acc, 90)) if len(acc)
             else None}
  writer.close()
  ckpt.close()
  with open(os.path.join(workdir, "summary.json"), "w") as fh:
    json.dump(summary, fh, indent=2)
  return summary


def alg_event(config, fed, rounds):
  from trustjax.privacy.accounting import dp_sgd_event
  q = config.fl.cohort_size / fed.num_clients
  return dp_sgd_event(config.fl.noise_multiplier, q, rounds)
