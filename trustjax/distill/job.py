"""Counterfactual distillation job (what `launch/distill.py` runs).

Two modes sharing one loop, one data pipeline and one evaluation:

* `mode="lm"`: plain causal-LM training of a GPT-2 (the teacher; or any LM).
* `mode="distill"`: a student learns from a frozen teacher loaded from
  `teacher_dir` (a `save_gpt2` directory, e.g. the `model/` folder of an
  `lm` run with the same `data` config), with
  loss = alpha_kd * T^2 KL(teacher_T || student_T) + alpha_ce * CE
  (`trustjax.distill.losses`). Student init `every_other` copies teacher
  blocks 0, 2, 4, ... (DistilGPT-2, Sanh et al. 2019); `scratch` is random.
  - `cda.mode`: "add" appends the counterfactual row of every training row
    that holds a gendered word (Lu et al. 2018); "swap" replaces each sampled
    row by its counterfactual with probability `cda.p` (host RNG seeded by
    (seed, step), so reruns are identical); "none".
  - `tpp.method` in max/mean/expmean: teacher prediction perturbation
    (Gupta et al. 2022, `trustjax.distill.perturbation`); the teacher runs
    on the original and the token-swapped rows in one batched forward, in
    the same jitted function as the student's step.

Data: `trustjax.distill.corpus` (BOLD Wikipedia sentences of training
entities + Tiny Shakespeare; held-out entities for perplexity and prompts;
GPT-2 BPE restricted to the corpus vocabulary, permutation remapped).

Workdir: config.json, vocab.json (GPT-2 id of each model id), metrics.jsonl
+ TensorBoard, checkpoints (exact resume: params, optimizer; step and data
order are functions of (seed, step)), model/ (HF config.json +
model.safetensors), eval.md, eval.json, polarity_*.png, loss.png and
summary.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np
from ml_collections import config_dict

ConfigDict = config_dict.ConfigDict
CDA_MODES = ("none", "add", "swap")
TPP_METHODS = ("none", "max", "mean", "expmean")
# Pairs spanning the he-she direction for embedding polarity (BOLD uses
# he-she; more definitional pairs make it less noisy on small models).
DIRECTION_PAIRS = (("he", "she"), ("his", "her"), ("man", "woman"),
                   ("him", "her"), ("boy", "girl"), ("father", "mother"),
                   ("son", "daughter"), ("brother", "sister"),
                   ("husband", "wife"), ("king", "queen"), ("male", "female"))


def base_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.mode = "distill"              # lm | distill
  c.teacher_dir = ""              # distill: a save_gpt2 directory
  c.student_init = "every_other"  # every_other | scratch
  c.data = ConfigDict(dict(
      data_dir="", heldout_fraction=0.2, seq_len=64, min_count=2,
      shakespeare_speeches=-1, max_bold_entities=0))
  c.model = ConfigDict(dict(n_embd=128, n_layer=4, n_head=4,
                            scratch_layers=2))   # mode=lm / scratch student
  c.distill = ConfigDict(dict(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5))
  c.cda = ConfigDict(dict(mode="none", p=0.5))
  c.tpp = ConfigDict(dict(method="none"))
  c.optimizer = ConfigDict(dict(learning_rate=1e-3, warmup_steps=50,
                                weight_decay=0.01, grad_clip=1.0))
  c.batch_size = 16
  c.num_steps = 500
  c.log_every = 25
  c.eval_every = 0
  c.checkpoint_every = 100
  c.eval = ConfigDict(dict(
      batch_size=32, max_heldout_rows=0, prompts_per_group=20,
      max_prompt_len=16, max_new_tokens=24, temperature=1.0, top_k=40,
      generate=True))
  return c


def validate_config(config: ConfigDict) -> None:
  def bad(name, value, valid):
    raise ValueError(f"config.{name}={value!r} is invalid: {valid}")
  if config.mode not in ("lm", "distill"):
    bad("mode", config.mode, "valid: lm, distill")
  if config.mode == "distill" and not config.teacher_dir:
    bad("teacher_dir", config.teacher_dir, "distill mode needs the teacher's "
        "save_gpt2 directory (the model/ folder of an lm run)")
  if config.student_init not in ("every_other", "scratch"):
    bad("student_init", config.student_init, "valid: every_other, scratch")
  if config.cda.mode not in CDA_MODES:
    bad("cda.mode", config.cda.mode, f"valid: {CDA_MODES}")
  if not 0 <= config.cda.p <= 1:
    bad("cda.p", config.cda.p, "a probability in [0, 1]")
  if config.tpp.method not in TPP_METHODS:
    bad("tpp.method", config.tpp.method, f"valid: {TPP_METHODS}")
  if config.mode == "lm" and config.tpp.method != "none":
    bad("tpp.method", config.tpp.method, "needs mode=distill (a teacher)")
  if config.distill.temperature <= 0:
    bad("distill.temperature", config.distill.temperature, "must be > 0")
  for name in ("batch_size", "num_steps", "log_every", "checkpoint_every"):
    if config[name] <= 0:
      bad(name, config[name], "must be a positive integer")
  if config.data.seq_len < 4:
    bad("data.seq_len", config.data.seq_len, "must be >= 4")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


class Data:
  """Encoded rows and what evaluation needs (see trustjax.distill.corpus)."""

  def __init__(self, config: ConfigDict):
    from trustjax.distill import corpus as cp
    from trustjax.fairness import CounterfactualSwapper
    from trustjax.models import gpt2_tokenizer
    dc = config.data
    self.corpus = cp.build_corpus(
        dc.data_dir or None, heldout_fraction=dc.heldout_fraction,
        seed=config.seed, shakespeare_speeches=dc.shakespeare_speeches,
        max_bold_entities=dc.max_bold_entities)
    self.tokenizer = gpt2_tokenizer()
    self.swapper = CounterfactualSwapper()
    perm_gpt2 = self.swapper.token_permutation(self.tokenizer)
    docs = self.corpus.train_docs
    cf_docs = [self.swapper.swap(d) for d in docs]
    enc = lambda texts: [e.ids for e in self.tokenizer.encode_batch(texts)]
    tok, cf_tok = enc(docs), enc(cf_docs)
    self.vocab = cp.CorpusVocab.build(tok + cf_tok, perm_gpt2, dc.min_count)
    loc = lambda lists: [self.vocab.to_local(t) for t in lists]
    tok, cf_tok = loc(tok), loc(cf_tok)
    self.ids, self.mask, members = cp.pack_rows(tok, dc.seq_len)
    self.cf_ids, self.cf_mask = cp.pack_like(cf_tok, members, dc.seq_len)
    self.gendered_row = np.array(
        [any(cf_docs[d] != docs[d] for d in m) for m in members])
    held = loc(enc(self.corpus.heldout_docs))
    self.heldout_ids, self.heldout_mask, _ = cp.pack_rows(held, dc.seq_len)
    self.perm = self.vocab.remap_permutation(perm_gpt2)

  def train_arrays(self, cda_mode: str) -> tuple[np.ndarray, np.ndarray]:
    if cda_mode == "add":
      g = self.gendered_row
      return (np.concatenate([self.ids, self.cf_ids[g]]),
              np.concatenate([self.mask, self.cf_mask[g]]))
    return self.ids, self.mask

  def local_ids(self, text: str) -> list[int]:
    return self.vocab.to_local(self.tokenizer.encode(text).ids).tolist()

  def decode(self, local_ids) -> str:
    g = [int(t) for t in self.vocab.to_gpt2(local_ids)]
    out = []
    for t in g:
      if t == 50256:
        break
      if t >= 0:
        out.append(t)
    return self.tokenizer.decode(out)

  def direction_pairs(self) -> list[tuple[int, int]]:
    pairs = []
    for a, b in DIRECTION_PAIRS:
      ia, ib = self.tokenizer.encode(" " + a).ids, self.tokenizer.encode(
          " " + b).ids
      if len(ia) == 1 and len(ib) == 1:
        la, lb = self.vocab.to_local(ia)[0], self.vocab.to_local(ib)[0]
        if la > 1 and lb > 1:
          pairs.append((int(la), int(lb)))
    return pairs


def _batch_indices(n: int, batch_size: int, seed: int, step: int):
  """Shuffled fixed-size batches: row indices of step `step`."""
  steps_per_epoch = max(1, n // batch_size)
  epoch, i = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, 11, epoch]).permutation(n)
  if n < batch_size:
    return np.resize(perm, batch_size)
  return perm[i * batch_size:(i + 1) * batch_size]


def swap_mask(batch_size: int, p: float, seed: int, step: int) -> np.ndarray:
  """bool[B]: rows replaced by their counterfactual at `step` (cda swap)."""
  return np.random.default_rng([seed, 13, step]).random(batch_size) < p


# --------------------------------------------------------------------------
# Models and the step
# --------------------------------------------------------------------------


def build_models(config: ConfigDict, vocab_size: int):
  """(student, teacher or None) GPT2LMHeadModels."""
  from flax import nnx
  from trustjax.models import GPT2Config, GPT2LMHeadModel, load_gpt2
  from trustjax.models import select_layers
  n_pos = config.data.seq_len + config.eval.max_prompt_len + \
      config.eval.max_new_tokens
  if config.mode == "lm":
    mc = config.model
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_pos,
                     n_embd=mc.n_embd, n_layer=mc.n_layer, n_head=mc.n_head)
    return GPT2LMHeadModel(cfg, rngs=nnx.Rngs(config.seed)), None
  teacher = load_gpt2(config.teacher_dir)
  if teacher.config.vocab_size != vocab_size:
    raise ValueError(
        f"teacher {config.teacher_dir} has vocab_size "
        f"{teacher.config.vocab_size}, the data config gives {vocab_size}: "
        "train the teacher with the same data.* settings")
  if config.student_init == "every_other":
    student = select_layers(teacher, range(0, teacher.config.n_layer, 2))
  else:
    cfg = teacher.config.replace(n_layer=config.model.scratch_layers)
    student = GPT2LMHeadModel(cfg, rngs=nnx.Rngs(config.seed))
  return student, teacher


def make_optimizer(config: ConfigDict):
  import optax
  oc = config.optimizer
  sched = optax.warmup_cosine_decay_schedule(
      0.0, oc.learning_rate, max(1, oc.warmup_steps),
      max(oc.warmup_steps + 1, config.num_steps), oc.learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(oc.grad_clip),
                     optax.adamw(sched, weight_decay=oc.weight_decay))


def make_train_step(student_graphdef, teacher_graphdef, tx, *,
                    temperature: float, alpha_kd: float, alpha_ce: float,
                    tpp_method: str, perm: np.ndarray | None):
  """One jitted step: teacher forward(s) (batched) + student update.

  `step(state, teacher_params, ids, mask) -> (state, metrics)` with state =
  {"params", "opt_state"}; teacher_graphdef None means plain LM training.
  """
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from trustjax.distill import losses, perturbation

  perm_j = None if perm is None else jnp.asarray(perm)

  def teacher_logprobs(tparams, ids, mask):
    teacher = nnx.merge(teacher_graphdef, tparams)
    if tpp_method == "none":
      logits = teacher(ids, attention_mask=mask)
      return jax.nn.log_softmax(logits / temperature, axis=-1)
    both = jnp.concatenate([ids, perm_j[ids]], axis=0)
    logits = teacher(both, attention_mask=jnp.concatenate([mask, mask], 0))
    b = ids.shape[0]
    return perturbation.perturbed_teacher_logprobs(
        logits[:b], logits[b:], ids, mask, perm_j, tpp_method, temperature)

  def step(state, tparams, ids, mask):
    tlp = None
    if teacher_graphdef is not None:
      tlp = jax.lax.stop_gradient(teacher_logprobs(tparams, ids, mask))

    def loss_fn(params):
      logits = nnx.merge(student_graphdef, params)(ids, attention_mask=mask)
      return losses.distillation_loss(
          logits, ids, mask, tlp, temperature=temperature,
          alpha_kd=alpha_kd, alpha_ce=alpha_ce)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "ce": aux["ce"], "kd": aux["kd"],
               "grad_norm": optax.tree.norm(grads)}
    return {"params": params, "opt_state": opt_state}, metrics

  return jax.jit(step)


def heldout_perplexity(graphdef, params, ids, mask, batch_size: int) -> float:
  """exp(token-mean NLL) over rows [N,T] (scored positions as in training)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from trustjax.models import causal_lm_token_nll

  @jax.jit
  def sums(params, ids, mask):
    logits = nnx.merge(graphdef, params)(ids, attention_mask=mask)
    nll, w = causal_lm_token_nll(logits, ids, mask)
    return jnp.sum(nll * w), jnp.sum(w)

  total = count = 0.0
  n = len(ids)
  for s in range(0, n, batch_size):
    idx = np.arange(s, s + batch_size) % n
    m = mask[idx].copy()
    m[min(batch_size, n - s):] = False   # wrapped rows are padding
    a, c = sums(params, ids[idx], m)
    total, count = total + float(a), count + float(c)
  return float(math.exp(total / max(count, 1.0)))


def generate_for_prompts(model, data: Data, config: ConfigDict, key):
  """Generations (text without the prompt) for held-out BOLD prompts.

  At most `eval.prompts_per_group` prompts per (domain, group), picked by a
  seeded permutation; prompts keep their last `eval.max_prompt_len` tokens.
  Returns (texts, token_ids, groups, domains, prompts).
  """
  import jax
  from trustjax.models import generate
  ec = config.eval
  pr = data.corpus.prompts
  rng = np.random.default_rng([config.seed, 17])
  chosen = []
  for key_ in sorted(set(zip(pr["domain"], pr["group"]))):
    idx = [i for i, k in enumerate(zip(pr["domain"], pr["group"]))
           if k == key_]
    idx = [idx[j] for j in rng.permutation(len(idx))[:ec.prompts_per_group]]
    chosen += sorted(idx)
  p = ec.max_prompt_len
  texts, toks = [], []
  for s in range(0, len(chosen), ec.batch_size):
    part = chosen[s:s + ec.batch_size]
    ids = np.zeros((ec.batch_size, p), np.int32)
    mask = np.zeros((ec.batch_size, p), bool)
    for r, i in enumerate(part + part[:1] * (ec.batch_size - len(part))):
      t = data.local_ids(pr["text"][i].strip())[-p:] or [0]
      ids[r, p - len(t):] = t
      mask[r, p - len(t):] = True
    out = np.asarray(generate(
        model, ids, mask, max_new_tokens=ec.max_new_tokens,
        key=jax.random.fold_in(key, s), temperature=ec.temperature,
        top_k=ec.top_k, eos_id=0))
    for r in range(len(part)):
      row = out[r].tolist()
      row = row[:row.index(0)] if 0 in row else row
      toks.append([t for t in row if t > 1])
      texts.append(data.decode(row))
  groups = [pr["group"][i] for i in chosen]
  domains = [pr["domain"][i] for i in chosen]
  prompts = [pr["text"][i] for i in chosen]
  return texts, toks, groups, domains, prompts


# --------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        stop_after: int | None = None) -> dict:
  """Trains (lm or distill), evaluates, writes the workdir; returns summary.

  `stop_after` ends the loop after that many steps with a checkpoint (what
  a kill does); the rerun resumes exactly (tests compare metrics.jsonl).
  """
  import jax
  from flax import nnx
  from trustjax import experiment as tjx
  from trustjax.models import save_gpt2

  validate_config(config)
  tjx.prepare_workdir(workdir, config, overwrite=overwrite,
                      ignore=("eval.generate",))
  data = Data(config)
  with open(os.path.join(workdir, "vocab.json"), "w") as f:
    json.dump({"gpt2_ids": data.vocab.to_json(),
               "note": "model id i is GPT-2 BPE id gpt2_ids[i]; 0 = EOS, "
                       "1 = UNK (-1)"}, f)
  ids, mask = data.train_arrays(config.cda.mode)
  student, teacher = build_models(config, len(data.vocab))
  sgraph, sparams = nnx.split(student)
  tgraph, tparams = (None, None) if teacher is None else nnx.split(teacher)
  tx = make_optimizer(config)
  state = {"params": sparams, "opt_state": tx.init(sparams)}
  dc = config.distill
  step_fn = make_train_step(
      sgraph, tgraph, tx, temperature=dc.temperature,
      alpha_kd=dc.alpha_kd, alpha_ce=dc.alpha_ce,
      tpp_method=config.tpp.method, perm=data.perm)

  ckpt = tjx.Checkpointer(workdir, every_steps=config.checkpoint_every)
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is not None:
    start, state, _ = restored
    print(f"resuming from step {start} in {workdir}", flush=True)
  writer = tjx.MetricWriter(workdir, resume_step=start if restored else None)
  steps = int(config.num_steps)
  desc = "lm" if config.mode == "lm" else "distill"
  progress = tjx.Progress(steps, initial_step=start, desc=desc,
                          log_every=config.log_every)
  end = steps if stop_after is None else min(steps, start + stop_after)
  n = len(ids)
  held = slice(None) if not config.eval.max_heldout_rows else slice(
      0, config.eval.max_heldout_rows)
  hids, hmask = data.heldout_ids[held], data.heldout_mask[held]
  t0 = time.perf_counter()
  for step in range(start, end):
    idx = _batch_indices(n, config.batch_size, config.seed, step)
    b_ids, b_mask = ids[idx], mask[idx]
    if config.cda.mode == "swap":
      sw = swap_mask(config.batch_size, config.cda.p, config.seed, step)
      b_ids = np.where(sw[:, None], data.cf_ids[idx], b_ids)
      b_mask = np.where(sw[:, None], data.cf_mask[idx], b_mask)
    state, metrics = step_fn(state, tparams, b_ids, b_mask)
    done = step + 1
    if done % config.log_every == 0 or done == steps:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if config.eval_every and done % config.eval_every == 0:
        metrics["heldout_ppl"] = heldout_perplexity(
            sgraph, state["params"], hids, hmask, config.eval.batch_size)
      writer.write(done, metrics)
      progress.update(done, loss=metrics["loss"])
    ckpt.maybe_save(done, state, {"step": done}, force=(done == end))
  progress.close()
  train_time = time.perf_counter() - t0
  if end < steps:
    writer.close()
    ckpt.close()
    return {"stopped_at": end}

  summary: dict[str, Any] = {
      "mode": config.mode, "data": data.corpus.source,
      "vocab_size": len(data.vocab), "train_rows": int(n),
      "train_entities": data.corpus.num_train_entities,
      "heldout_entities": data.corpus.num_heldout_entities,
      "steps": steps, "train_seconds_this_run": round(train_time, 2)}
  summary["heldout_ppl"] = heldout_perplexity(
      sgraph, state["params"], hids, hmask, config.eval.batch_size)
  model = nnx.merge(sgraph, state["params"])
  save_gpt2(model, os.path.join(workdir, "model"))
  if config.eval.generate:
    summary.update(_evaluate_generations(model, teacher, data, config,
                                         workdir))
  writer.write(steps, {f"final_{k}": v for k, v in summary.items()
                       if isinstance(v, (int, float))
                       and k != "train_seconds_this_run"})
  writer.close()
  ckpt.close()
  rows = [r for r in tjx.read_metrics(workdir) if "loss" in r]
  if rows:
    tjx.line_plot(os.path.join(workdir, "loss.png"),
                  [r["step"] for r in rows],
                  {"loss": [r["loss"] for r in rows],
                   "ce": [r["ce"] for r in rows]},
                  xlabel="step", ylabel="loss", title=f"{desc} loss")
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def _evaluate_generations(model, teacher, data: Data, config: ConfigDict,
                          workdir: str) -> dict:
  import jax
  from trustjax.fairness import generation as gen
  texts, toks, groups, domains, prompts = generate_for_prompts(
      model, data, config, jax.random.fold_in(jax.random.key(config.seed),
                                              10 ** 6))
  # One fixed embedding for all students of a teacher: the teacher's wte.
  emb_model = teacher if teacher is not None else model
  emb = np.asarray(emb_model.wte.embedding[...])
  pairs = data.direction_pairs()
  direction = gen.gender_direction(emb, pairs) if pairs else None
  res = gen.evaluate_generations(texts, groups, domains, token_ids=toks,
                                 embeddings=emb if pairs else None,
                                 direction=direction)
  lines = [f"# Generations of {workdir}", "",
           f"heldout perplexity and BOLD metrics; {len(texts)} generations "
           f"of {config.eval.max_new_tokens} tokens (top-k "
           f"{config.eval.top_k}, T={config.eval.temperature}).", ""]
  lines.append(gen.markdown_table([res["summary"]]))
  for d, rows in res["groups"].items():
    lines += ["", f"## {d}", "", gen.markdown_table(rows)]
    gen.plot_group_polarity(os.path.join(workdir, f"polarity_{d}.png"), rows,
                            f"{d}: gender polarity of generations")
  with open(os.path.join(workdir, "eval.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"results": res, "samples": [
        {"prompt": p, "generation": t, "group": g}
        for p, t, g in list(zip(prompts, texts, groups))[:200]]}, f, indent=1)
  return res["summary"]
