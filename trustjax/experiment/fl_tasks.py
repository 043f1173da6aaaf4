"""The two tasks of the federated job (`federated_job.run`): what a round
loop needs from a data set and a model.

* `classification_task`: a text-classification data set (CLINC150) spread
  over `fl.num_clients` clients by a partitioner; data and model wiring come
  from the classification job.
* `char_task`: next-character prediction on Tiny Shakespeare, one natural
  client per speaker-by-segment, a small causal GPT-2 over characters
  (`char_lm`), as in LEAF (Caldas et al. 2018).

Either way `fl.heldout_clients` clients (`split_clients`: a seeded
permutation of client ids, `fl.partition_seed`) never train; they give the
distribution of per-client accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
from ml_collections import config_dict

from trustjax.experiment import classification

ConfigDict = config_dict.ConfigDict


@dataclasses.dataclass
class Task:
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


def split_clients(assign: np.ndarray, num_clients: int, heldout: int,
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


def partition(config, labels):
  """The configured partition of the training split: owner id per example."""
  from trustjax import federated as fl
  f = config.fl
  if f.partition == "iid":
    return fl.iid(len(labels), f.num_clients, seed=f.partition_seed)
  if f.partition == "dirichlet":
    return fl.dirichlet_label_skew(labels, f.num_clients, alpha=f.alpha,
                                   seed=f.partition_seed, min_size=1)
  return fl.heavy_tailed_dirichlet(labels, f.num_clients, alpha=f.alpha,
                                   sigma=f.sigma, seed=f.partition_seed)


def classification_task(config: ConfigDict, workdir: str | None) -> Task:
  """Text classification (e.g. CLINC150) split over `fl.num_clients` clients
  by `fl.partition`; data and model from the classification job. `workdir`
  (None: none) receives the vocabulary of a word tokenizer."""
  from trustjax import federated as fl
  classification.validate_config(config)
  f = config.fl
  data = classification.load_data(config, workdir)
  train = data.arrays["train"]
  assign = np.asarray(partition(config, train["label"]))
  population = fl.FederatedData.from_assignment(train, assign, f.num_clients)
  heldout, train_ids, rows, owner = split_clients(
      assign, f.num_clients, f.heldout_clients, f.partition_seed)
  params, loss_fn, predict = classification._build(config, data)
  bs = config.eval_batch_size

  heldout_rows = [population.client_indices(int(c)) for c in heldout]

  def heldout_accuracy(p):
    return np.array([classification.evaluate(
        predict, p, {k: v[idx] for k, v in train.items()}, bs,
        None)["accuracy"] for idx in heldout_rows if len(idx)])

  return Task(
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


def char_task(config: ConfigDict,
              validate: Callable[[ConfigDict, int], None]) -> Task:
  """Next-character prediction on Tiny Shakespeare, one client per speaker
  by segment; `validate(config, num_clients)` checks the sizes once the
  number of natural clients is known."""
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
  heldout, train_ids, _, _ = split_clients(
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
  _, _, rows, owner = split_clients(row_client, num_clients,
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

  return Task(
      source=f"tiny shakespeare ({num_clients} speaker-by-segment clients)",
      arrays={k: v[rows] for k, v in all_arrays.items()}, assign=owner,
      num_train=len(train_ids), population=population, params=params,
      loss_fn=loss_fn, validate_metrics=validate_metrics,
      heldout_accuracy=heldout_accuracy, final_metrics=final_metrics)
