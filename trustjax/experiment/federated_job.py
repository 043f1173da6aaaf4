"""Federated simulation job: split a data set over clients, run rounds of a
federated algorithm, evaluate on held-out clients.

What `launch/simulate_fl.py` runs. Two tasks share one round loop:

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

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import numpy as np
from ml_collections import config_dict

from trustjax.experiment import classification

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


@dataclasses.dataclass
class _Task:
  """What the round loop needs from a task.

  `arrays` ([N, ...] numpy) are the training clients' examples and
  `assign` (int[N], in [0, num_train)) their owners; `population` holds all
  clients (partition plot); `heldout_accuracy(params)` is float[H], the
  accuracy of each held-out client that has data.
  """
  source: str
  arrays: dict
  assign: np.ndarray
  num_train: int
  population: Any
  params: Any
  loss_fn: Callable
  validate_metrics: Callable      # params -> dict (logged as val_*)
  heldout_accuracy: Callable      # params -> float[H]
  final_metrics: Callable         # params -> dict (summary entries)
  row_sparse: Any = None          # federated.RowSparse or None


def _split_clients(assign: np.ndarray, num_clients: int, heldout: int,
                   seed: int):
  """(heldout ids, train ids, training rows, their owner in 0..len(train))."""
  # A seeded shuffle of client ids; the first `heldout` are evaluation
  # clients, never selected for training.
  perm = np.random.default_rng([seed, 7]).permutation(num_clients)
  heldout_ids = np.sort(perm[:heldout])
  train_ids = np.sort(perm[heldout:])
  remap = np.full(num_clients, -1, np.int64)
  remap[train_ids] = np.arange(len(train_ids))
  rows = np.flatnonzero(remap[assign] >= 0)
  return heldout_ids, train_ids, rows, remap[assign[rows]]


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


def _classification_task(config: ConfigDict, workdir: str) -> _Task:
  from trustjax import federated as fl
  classification.validate_config(config)
  f = config.fl
  data = classification.load_data(config, workdir)
  train = data.arrays["train"]
  assign = np.asarray(_partition(config, train["label"]))
  population = fl.FederatedData.from_assignment(train, assign, f.num_clients)
  heldout, train_ids, rows, owner = _split_clients(
      assign, f.num_clients, f.heldout_clients, f.partition_seed)
  params, loss_fn, predict = classification._build(config, data)
  bs = config.eval_batch_size

  heldout_rows = [population.client_indices(int(c)) for c in heldout]

  def heldout_accuracy(p):
    return np.array([classification.evaluate(
        predict, p, {k: v[idx] for k, v in train.items()}, bs,
        None)["accuracy"] for idx in heldout_rows if len(idx)])

  return _Task(
      source=data.source,
      arrays={k: v[rows] for k, v in train.items()}, assign=owner,
      num_train=len(train_ids), population=population, params=params,
      loss_fn=loss_fn,
      validate_metrics=lambda p: classification.evaluate(
          predict, p, data.arrays["val"], bs, data.oos_label),
      heldout_accuracy=heldout_accuracy,
      final_metrics=lambda p: {f"test_{k}": v for k, v in classification.
                               evaluate(predict, p, data.arrays["test"], bs,
                                        data.oos_label).items()},
      row_sparse=(fl.RowSparse(("token_embed", "embedding"), "ids")
                  if f.row_sparse and config.model.name != "mlp" else None))


@functools.lru_cache(maxsize=4)
def char_lm(n_embd: int, n_layer: int, n_head: int, vocab_size: int,
            seq_len: int, seed: int):
  """A causal character model (GPT-2 blocks) and its pure pieces.

  Cached: a second job in the same process with the same model (a resumed
  run, a test) gets the same functions and so reuses their compiled
  programs. Returns `(params, loss_fn, score)`:
  `loss_fn(params, {"ids": int[B,T], "mask": [B,T]}, rng) ->
  (loss f32[B], n_targets f32[B])` with loss[b] =
  sum of row b's next-character NLL over its scored targets / seq_len
  (T = seq_len + 1); `score(params, ids, mask) -> (correct f32[B], n_targets
  f32[B], nll_sum f32[B])` (argmax next-character hits), jitted.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from trustjax import models
  cfg = models.GPT2Config(vocab_size=vocab_size, n_positions=seq_len + 1,
                          n_embd=n_embd, n_layer=n_layer, n_head=n_head)
  model = models.GPT2LMHeadModel(cfg, rngs=nnx.Rngs(seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def token_nll(p, ids, mask):
    logits = nnx.merge(graphdef, p, rest)(ids, attention_mask=mask)
    nll, w = models.causal_lm_token_nll(logits, ids, mask)
    return logits, nll, w

  def loss_fn(p, batch, rng):
    del rng
    _, nll, w = token_nll(p, batch["ids"], batch["mask"])
    return jnp.sum(nll * w, axis=-1) / seq_len, jnp.sum(w, axis=-1)

  @jax.jit
  def score(p, ids, mask):
    logits, nll, w = token_nll(p, ids, mask)
    hit = (jnp.argmax(logits[:, :-1], axis=-1) == ids[:, 1:]).astype(
        jnp.float32)
    return (jnp.sum(hit * w, axis=-1), jnp.sum(w, axis=-1),
            jnp.sum(nll * w, axis=-1))

  return params, loss_fn, score


def _score_rows(score, params, arrays, batch_size):
  """Per-row (correct, targets, nll_sum) float64[N] in fixed-shape batches."""
  n = len(arrays["ids"])
  out = np.zeros((3, n))
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size) % n
    got = score(params, arrays["ids"][idx], arrays["mask"][idx])
    k = min(batch_size, n - start)
    out[:, start:start + k] = np.stack([np.asarray(g)[:k] for g in got])
  return out


def _char_task(config: ConfigDict) -> _Task:
  from trustjax import data as tjdata
  from trustjax import federated as fl
  f, dc = config.fl, config.data
  raw = tjdata.load_shakespeare(dc.data_dir or None)
  texts, cid = raw["text"], np.asarray(raw["client_index"], np.int64)
  # Rows each client would have (ceil(len / seq_len) per speech, capped):
  # clients with fewer than `min_rows_per_client` are dropped (as LEAF's
  # `--min-samples`), then the first `max_clients` in file order are kept
  # and renumbered 0..num_clients-1.
  n_rows = np.bincount(cid, weights=[-(-len(t) // dc.seq_len) for t in texts])
  if dc.max_rows_per_client:
    n_rows = np.minimum(n_rows, dc.max_rows_per_client)
  eligible = n_rows >= max(dc.min_rows_per_client, 1)
  if dc.max_clients:
    eligible &= np.cumsum(eligible) <= dc.max_clients
  new_id = np.where(eligible, np.cumsum(eligible) - 1, -1)
  keep = eligible[cid]
  texts = [t for t, k in zip(texts, keep) if k]
  cid, num_clients = new_id[cid[keep]], int(eligible.sum())
  validate(config, num_clients)
  heldout, train_ids, _, _ = _split_clients(
      cid, num_clients, f.heldout_clients, f.partition_seed)
  # The vocabulary holds the training clients' characters only; a held-out
  # client's unseen character is UNK (an error the model cannot avoid).
  is_train = np.isin(cid, train_ids)
  vocab = tjdata.CharVocab.from_texts(
      [t for t, k in zip(texts, is_train) if k])
  ids, mask, speech = tjdata.char_sequences(texts, vocab, dc.seq_len)
  row_client = cid[speech]
  if dc.max_rows_per_client:
    # Keep each client's first rows: rank of a row within its client (rows
    # are in file order).
    order = np.argsort(row_client, kind="stable")
    grouped = row_client[order]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(grouped, grouped)
    keep = rank < dc.max_rows_per_client
    ids, mask, row_client = ids[keep], mask[keep], row_client[keep]
  all_arrays = {"ids": ids, "mask": mask}
  population = fl.FederatedData.from_assignment(all_arrays, row_client,
                                                num_clients)
  _, _, rows, owner = _split_clients(row_client, num_clients,
                                     f.heldout_clients, f.partition_seed)
  mc = config.model
  params, loss_fn, score = char_lm(mc.n_embd, mc.n_layer, mc.n_head,
                                   len(vocab), dc.seq_len, config.seed)
  heldout_rows = [population.client_indices(int(c)) for c in heldout]
  eval_rows = np.sort(np.concatenate(heldout_rows)) if len(heldout) else \
      np.zeros(0, np.int64)
  eval_arrays = {k: v[eval_rows] for k, v in all_arrays.items()}
  # Position of each evaluation row's client among the held-out clients.
  eval_client = np.searchsorted(heldout, row_client[eval_rows])
  bs = config.eval_batch_size

  # Unigram baseline: always predict the most frequent target character of
  # the training clients.
  train_targets = ids[rows][:, 1:][mask[rows][:, 1:] & mask[rows][:, :-1]]
  mode = int(np.bincount(train_targets).argmax())

  def unigram_hits(idx):
    t = ids[idx][:, 1:][mask[idx][:, 1:] & mask[idx][:, :-1]]
    return float(np.mean(t == mode)) if t.size else float("nan")

  def validate_metrics(p):
    c, n, nll = _score_rows(score, p, eval_arrays, bs).sum(1)
    return {"accuracy": c / max(n, 1), "loss": nll / max(n, 1),
            "bits_per_char": nll / max(n, 1) / np.log(2)}

  def heldout_accuracy(p):
    # Micro accuracy within a client: its correct next characters over its
    # characters (every row scored once, then summed per client).
    c, n, _ = _score_rows(score, p, eval_arrays, bs)
    hits = np.bincount(eval_client, c, minlength=len(heldout))
    chars = np.bincount(eval_client, n, minlength=len(heldout))
    return hits[chars > 0] / chars[chars > 0]

  def final_metrics(p):
    per_client = [unigram_hits(r) for r in heldout_rows if len(r)]
    return {**{f"heldout_{k}": v for k, v in validate_metrics(p).items()},
            "unigram_char": vocab.decode([mode]),
            "heldout_unigram_accuracy": unigram_hits(eval_rows),
            "heldout_unigram_acc_mean": float(np.mean(per_client))
            if per_client else None,
            "vocab_size": len(vocab), "rows": int(len(ids)),
            "num_clients": num_clients}

  return _Task(
      source=f"tiny shakespeare ({num_clients} speaker-by-segment clients)",
      arrays={k: v[rows] for k, v in all_arrays.items()}, assign=owner,
      num_train=len(train_ids), population=population, params=params,
      loss_fn=loss_fn, validate_metrics=validate_metrics,
      heldout_accuracy=heldout_accuracy, final_metrics=final_metrics)


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
  if jax.process_count() > 1 and f.num_devices != jax.device_count():
    raise ValueError(
        f"this job runs on {jax.process_count()} processes with "
        f"{jax.device_count()} devices in all: set config.fl.num_devices="
        f"{jax.device_count()} (the cohort is then sharded over every "
        f"device); got fl.num_devices={f.num_devices}")
  multihost.prepare_workdir(workdir, config, overwrite=overwrite)
  main = multihost.is_main_process()
  task = (_char_task(config) if _is_char_task(config)
          else _classification_task(config, workdir if main else None))
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
