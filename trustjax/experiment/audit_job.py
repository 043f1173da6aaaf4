"""The audit job: shadow models on real data, every attack, one report.

What `launch/audit.py` runs (importable without absl):

  1. Load CLINC150 (optionally a seeded subset of the training split), insert
     canaries (`audit.make_canaries`: distinct random secrets, each canary
     its own random intent, repetition counts from the config), and tokenise
     with the public GPT-2 BPE hashed into `data.vocab_size` buckets
     (`classification.HashedBPE`; data-independent, so epsilon covers it).
     The canary pattern's tokenisation is verified first.
  2. For each defence (epsilon = inf: non-private; else DP-SGD calibrated to
     that epsilon), train K models side by side with the classification
     job's `run_stacked` on that data (`data=`): model k trains on its own
     subset (`train_masks`, from `audit.shadow_in_masks`, independent: each
     ordinary training example IN each model with probability 1/2; canary
     rows IN all). Model k is the classification config `model_configs`
     builds (seed `seed * 1000 + k`); DP models have their own Poisson
     sampler and accountant (q_k = batch_size / n_k, sigma calibrated per
     model to the defence's epsilon). Every model has its own workdir,
     `<workdir>/<defence>/models/<k>`, with checkpoints: a killed job
     resumes inside the defence it was training, exactly.
  3. Membership inference, each model in turn the target and the other K-1
     its shadows, pooled over targets (`audit.report.membership_attacks`):
     the global threshold attack on the loss, LiRA online/offline with
     per-example and global variance on the logit-scaled confidence.
     Metrics as in `audit.AttackResult`, log-log ROC plots, and empirical
     epsilon lower bounds of every attack (threshold chosen on half the
     trials; the largest is reported) next to the accountant's epsilon.
  4. Canaries on every model: exposure (exact rank over all candidates, and
     the skew-normal extrapolation from a sample), and white-box extraction
     (`audit.invert_canary`) on the first `audit.inversion_models` models.
  5. `report.md`, `report.json` and PNG plots in the workdir; per-defence
     scores in `<defence>/scores.npz` and the section in
     `<defence>/result.json`, reused when the job is rerun with the same
     config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

import numpy as np
from ml_collections import config_dict

from trustjax import audit as _audit
from trustjax.audit import report as _report
from trustjax.experiment import classification as _cls

ConfigDict = config_dict.ConfigDict


def base_config() -> ConfigDict:
  """Defaults of configs/audit_clinc150.py (see its variants)."""
  c = ConfigDict()
  c.seed = 0
  c.data = ConfigDict(dict(data_dir="", allow_synthetic=False, max_train=0,
                           vocab_size=8192, max_len=32))
  c.model = ConfigDict(dict(name="transformer", d_model=64, num_layers=1,
                            num_heads=2, d_ff=128, d_embed=64, d_hidden=128,
                            dropout=0.0))
  c.learning_rate = 3e-3
  c.batch_size = 64            # DP: the expected batch size
  c.num_epochs = 20.0          # over the largest model's (~N/2) training set
  c.num_models = 8             # K: targets and shadows of each other
  c.log_every = 0              # 0: every steps // 5 steps
  c.checkpoint_every = 200     # per model, in its workdir
  # Defences: epsilon per group of K models; inf = non-private.
  c.epsilons = (float("inf"), 8.0, 1.0)
  # max_batch_size: the fixed Poisson batch length of every model; 0: the
  # largest of the K models' default (negligible-truncation) maxima. Each
  # sampler caps it at its n_k + 1 (then no batch can be truncated and the
  # accountant needs no truncation term).
  # chunk_size > 0: the K DP models' step runs chunk_size models at a time
  # (`run_stacked(chunk_size=)`: lax.map over vmapped chunks; 1 = a scan over
  # the models inside one program); 0: all K vmapped at once. Same results
  # to float tolerance. For K=16 on a 2-core CPU, 1 was faster than 0 for
  # DP in both runs of benchmarks/shadow_training.py (non-private: mixed, so
  # non-private defences always vmap all K).
  c.dp = ConfigDict(dict(l2_clip=1.0, delta=config_dict.placeholder(float),
                         method="auto", accountant="pld", max_batch_size=0,
                         chunk_size=1))
  c.canary = ConfigDict(dict(template="my pin code is {d} {d} {d} {d}",
                             repetitions=(0, 1, 4, 16, 64), per_count=4,
                             exposure_sample=2000))
  c.audit = ConfigDict(dict(score="logit_scaled_confidence",
                            inversion_models=2, inversion_restarts=8,
                            inversion_steps=100, alpha=0.05,
                            eval_batch_size=512))
  return c


def validate_config(c: ConfigDict) -> None:
  """ValueError naming the bad field, before anything runs."""
  def bad(name, value, valid):
    raise ValueError(f"config.{name}={value!r} is invalid: {valid}")
  if c.num_models < 6:
    bad("num_models", c.num_models, "must be >= 6 (each model is audited "
        "with the others as shadows; per-example variance needs 2 IN and 2 "
        "OUT shadows per example)")
  if c.batch_size < 1 or c.num_epochs <= 0 or c.learning_rate <= 0:
    bad("batch_size/num_epochs/learning_rate",
        (c.batch_size, c.num_epochs, c.learning_rate), "must be > 0")
  if (c.log_every < 0 or c.checkpoint_every < 1 or c.dp.max_batch_size < 0
      or c.dp.chunk_size < 0):
    bad("log_every/checkpoint_every/dp.max_batch_size/dp.chunk_size",
        (c.log_every, c.checkpoint_every, c.dp.max_batch_size,
         c.dp.chunk_size),
        "log_every >= 0 (0: steps // 5), checkpoint_every >= 1, "
        "dp.max_batch_size >= 0 (0: default), dp.chunk_size >= 0 (0: vmap "
        "all)")
  try:
    eps = [float(e) for e in c.epsilons]
  except (TypeError, ValueError):
    eps = []
  if not eps or any(not e > 0 for e in eps):
    bad("epsilons", c.epsilons, "a non-empty list of epsilons > 0 (inf: "
        "non-private)")
  if c.audit.score not in _audit.SCORE_NAMES:
    bad("audit.score", c.audit.score, f"valid: {_audit.SCORE_NAMES}")
  if c.audit.inversion_models > c.num_models:
    bad("audit.inversion_models", c.audit.inversion_models,
        f"at most num_models={c.num_models}")


def defence_name(eps: float) -> str:
  return "non_private" if math.isinf(eps) else f"dp_eps{eps:g}"


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclasses.dataclass
class AuditData:
  encoded: _cls.EncodedData   # train (with canaries) and test splits
  owner: np.ndarray           # int[N]: canary index of each train row, -1 else
  canaries: list
  tokens: list                # CanaryTokens per canary

  @property
  def train(self) -> dict:
    return self.encoded.arrays["train"]

  @property
  def test(self) -> dict:
    return self.encoded.arrays["test"]


def load_audit_data(c: ConfigDict) -> AuditData:
  """CLINC150 (in-scope intents) with the config's canaries inserted."""
  from trustjax import data as tjdata
  ds = tjdata.load_clinc150(c.data.data_dir or None, include_oos=False,
                            allow_synthetic=c.data.allow_synthetic)
  rng = np.random.default_rng([c.seed, 1])
  if c.data.max_train:
    keep = np.sort(rng.permutation(len(ds.train))[:c.data.max_train])
    ds = dataclasses.replace(ds, train=tjdata.Split(
        [ds.train.texts[i] for i in keep], ds.train.labels[keep]))
  reps = list(c.canary.repetitions)
  n_can = len(reps) * c.canary.per_count
  if n_can > ds.num_classes:
    raise ValueError(f"{n_can} canaries but {ds.num_classes} intents: each "
                     "canary gets its own intent; lower canary.per_count")
  labels = rng.choice(ds.num_classes, n_can, replace=False)
  pattern = _audit.CanaryPattern(c.canary.template, label=int(labels[0]))
  cans = _audit.make_canaries(pattern, reps, per_count=c.canary.per_count,
                              labels=labels, seed=c.seed)
  ds, owner = _audit.insert_canaries(ds, cans)
  tok = _cls.HashedBPE(c.data.vocab_size)
  tokens = [_audit.tokenize_canary(k.pattern, tok, c.data.max_len)
            for k in cans]
  arrays = {}
  for name, split in (("train", ds.train), ("test", ds.test)):
    ids, mask = tok.encode(split.texts, c.data.max_len)
    arrays[name] = {"ids": ids, "mask": mask,
                    "label": np.asarray(split.labels, np.int32)}
  encoded = _cls.EncodedData(
      arrays=arrays, num_classes=ds.num_classes, vocab_size=len(tok),
      oos_label=None, source=ds.source,
      tokenizer_note=(f"public GPT-2 BPE hashed into {len(tok)} buckets "
                      "(data-independent; costs no privacy)"))
  return AuditData(encoded=encoded, owner=owner, canaries=cans,
                   tokens=tokens)


def membership_masks(c: ConfigDict, owner: np.ndarray) -> np.ndarray:
  """bool[K, N]: ordinary rows IN each model with probability 1/2
  (independently), canary rows IN all."""
  pop = np.flatnonzero(owner < 0)
  m = np.ones((c.num_models, len(owner)), bool)
  # Independent masks: in leave-one-out, balanced ones would let the
  # shadows' IN count reveal the target's membership (see shadow_in_masks).
  m[:, pop] = _audit.shadow_in_masks(c.num_models, len(pop), seed=c.seed,
                                     balanced=False)
  return m


# --------------------------------------------------------------------------
# Training K models side by side (the classification job's run_stacked)
# --------------------------------------------------------------------------


def model_configs(c: ConfigDict, masks: np.ndarray,
                  eps: float) -> list[ConfigDict]:
  """The K classification configs of one defence (model k: row k of masks).

  All K train the same number of steps, `num_epochs` over the LARGEST
  subset, and (DP) share one maximum batch size, `dp.max_batch_size` or else
  the largest of the models' default (negligible-truncation) maxima; each
  sampler's truncation is accounted anyway. delta defaults to
  1 / n_max^1.1 for every model.
  `config.data` describes the data the job passes (`run_stacked(data=)`):
  CLINC150 in-scope, hashed GPT-2 BPE.
  """
  from trustjax.privacy import default_max_batch_size
  sizes = masks.sum(1)
  bs = c.batch_size
  steps = max(1, int(math.ceil(c.num_epochs * sizes.max() / bs)))
  base = _cls.base_config()
  base.data.update(dict(name="clinc150", data_dir=c.data.data_dir,
                        include_oos=False,
                        allow_synthetic=c.data.allow_synthetic,
                        tokenizer="gpt2", vocab_size=c.data.vocab_size,
                        max_len=c.data.max_len))
  base.model = ConfigDict(c.model.to_dict())
  base.optimizer.name = "adam"
  base.optimizer.learning_rate = c.learning_rate
  base.batch_size = bs
  base.num_steps = steps
  base.log_every = c.log_every or max(1, steps // 5)
  base.checkpoint_every = c.checkpoint_every
  base.eval_batch_size = c.audit.eval_batch_size
  if not math.isinf(eps):
    n_max = int(sizes.max())
    base.dp.update(dict(
        enabled=True, l2_clip=c.dp.l2_clip, target_epsilon=float(eps),
        delta=float(c.dp.delta or 1.0 / (n_max ** 1.1)),
        accountant=c.dp.accountant, method=c.dp.method,
        max_batch_size=int(c.dp.max_batch_size) or max(
            default_max_batch_size(int(n), bs / int(n), 1e-9 / steps)
            for n in sizes)))
  out = []
  for k in range(len(masks)):
    mc = base.copy_and_resolve_references()
    mc.seed = c.seed * 1000 + k
    out.append(mc)
  return out


def train_defence(c: ConfigDict, data: AuditData, masks: np.ndarray,
                  eps: float, workdir: str, *,
                  stop_after: int | None = None):
  """Trains (or resumes, or reloads) the K models of one defence.

  Model k lives in `<workdir>/models/<k>` (a classification-job workdir).
  Returns (graphdef, rest, stacked params [K, ...], info, summaries), or
  None when `stop_after` ended the training early (checkpointed).
  """
  from flax import nnx
  from trustjax import models, sweeps
  configs = model_configs(c, masks, eps)
  dirs = [os.path.join(workdir, "models", str(k)) for k in range(len(masks))]
  t0 = time.perf_counter()
  summaries, params = _cls.run_stacked(
      configs, dirs, train_masks=list(masks), data=data.encoded,
      stop_after=stop_after, return_params=True,
      chunk_size=(None if math.isinf(eps) else c.dp.chunk_size or None))
  if "stopped_at" in summaries[0]:
    return None
  model = models.build_model(configs[0].model,
                             vocab_size=data.encoded.vocab_size,
                             num_classes=data.encoded.num_classes,
                             max_len=c.data.max_len, rngs=nnx.Rngs(0))
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  info = {"steps": summaries[0]["steps"],
          "train_sizes": [s["num_train_examples"] for s in summaries],
          "train_seconds": round(time.perf_counter() - t0, 1)}
  if not math.isinf(eps):
    info.update(delta=summaries[0]["delta"],
                noise_multipliers=[s["noise_multiplier"] for s in summaries],
                epsilons=[s["epsilon"] for s in summaries],
                l2_clip=summaries[0]["l2_clip"],
                max_batch_size=configs[0].dp.max_batch_size)
  return graphdef, rest, sweeps.stack(params), info, summaries


def stacked_logits(graphdef, rest, params, arrays: dict,
                   batch_size: int) -> np.ndarray:
  """f32[K, N, C] logits of all K stacked models on `arrays`."""
  import jax
  from flax import nnx

  @jax.jit
  def fwd(p, ids, mask):
    return jax.vmap(lambda q: nnx.merge(graphdef, q, rest)(ids, mask))(p)
  n = len(arrays["label"])
  out = []
  for s in range(0, n, batch_size):
    idx = np.arange(s, s + batch_size) % n
    lg = np.asarray(fwd(params, arrays["ids"][idx], arrays["mask"][idx]))
    out.append(lg[:, :min(batch_size, n - s)])
  return np.concatenate(out, 1)


# --------------------------------------------------------------------------
# Canaries
# --------------------------------------------------------------------------


def canary_audit(c: ConfigDict, data: AuditData, graphdef, rest, params,
                 log=print) -> list[dict]:
  """Exposure on every model, extraction on the first few: one row per
  (model, canary)."""
  import jax
  import optax
  from flax import nnx

  @jax.jit
  def cand_loss(p, ids, mask, labels):
    logits = nnx.merge(graphdef, p, rest)(ids, mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

  rows = []
  k_models = jax.tree.leaves(params)[0].shape[0]
  for k in range(k_models):
    pk = jax.tree.map(lambda x, k=k: x[k], params)
    model = nnx.merge(graphdef, pk, rest)
    for i, (can, tok) in enumerate(zip(data.canaries, data.tokens)):
      losses = _audit.candidate_losses(
          lambda ids, mask, lab, pk=pk: cand_loss(pk, ids, mask, lab), tok)
      true = int(can.pattern.secret_index(can.secret))
      rng = np.random.default_rng([c.seed, k, i])
      sample = rng.choice(len(losses), min(c.canary.exposure_sample,
                                           len(losses)), replace=False)
      row = {"model": k, "canary": i, "repetitions": can.repetitions,
             "secret": can.pattern.secret_string(can.secret),
             "rank": _audit.secret_rank(losses, true),
             "exposure": _audit.exposure(losses, true),
             "exposure_skewnorm": _audit.exposure_skewnorm(losses[sample],
                                                           losses[true])}
      if k < c.audit.inversion_models:
        res = _audit.invert_canary(
            model, tok, can.secret,
            key=jax.random.key(c.seed * 7919 + k * 101 + i),
            num_restarts=c.audit.inversion_restarts,
            num_steps=c.audit.inversion_steps)
        row.update(extracted=res.success, guess=res.guess_text,
                   slot_accuracy=res.slot_accuracy, inversion_rank=res.rank)
      rows.append(row)
    log(f"  canaries on model {k + 1}/{k_models} done")
  return rows


# --------------------------------------------------------------------------
# Job
# --------------------------------------------------------------------------


def run_defence(c: ConfigDict, data: AuditData, masks: np.ndarray, eps: float,
                workdir: str, log=print, *,
                stop_after: int | None = None) -> dict | None:
  """Trains one group, runs every attack, returns its report section (and
  caches it as <workdir>/<defence>/result.json); None when `stop_after`
  stopped the training (resume by calling again)."""
  name = defence_name(eps)
  d = os.path.join(workdir, name)
  cached = os.path.join(d, "result.json")
  if os.path.exists(cached):
    log(f"[{name}] reusing {cached}")
    with open(cached) as f:
      return json.load(f)
  os.makedirs(d, exist_ok=True)
  log(f"[{name}] training {c.num_models} models side by side")
  trained = train_defence(c, data, masks, eps, d, stop_after=stop_after)
  if trained is None:
    log(f"[{name}] stopped early (checkpointed; rerun to resume)")
    return None
  graphdef, rest, params, info, summaries = trained
  logits = stacked_logits(graphdef, rest, params, data.train,
                          c.audit.eval_batch_size)
  labels = np.broadcast_to(data.train["label"], logits.shape[:2])
  scores = np.asarray(_audit.score(c.audit.score, logits, labels), np.float64)
  losses = np.asarray(_audit.loss(logits, labels), np.float64)
  pop = np.flatnonzero(data.owner < 0)
  train_acc = (logits[:, pop].argmax(-1) == data.train["label"][pop]).mean(1)
  test_acc = np.asarray([s["test_accuracy"] for s in summaries])
  np.savez_compressed(os.path.join(d, "scores.npz"), scores=scores,
                      losses=losses, masks=masks)
  results = _report.membership_attacks(scores, losses, masks, pop)
  _audit.plot_roc(os.path.join(d, "roc.png"), results,
                  title=f"membership inference, {name}")
  delta = info.get("delta", 1.0 / (int(masks.sum(1).max()) ** 1.1))
  bounds = _report.empirical_epsilons(results, delta, c.audit.alpha, c.seed)
  lb = max(bounds, key=lambda b: b["epsilon_lb"])
  log(f"[{name}] canaries")
  rows = canary_audit(c, data, graphdef, rest, params, log)
  out = _report.jsonable({
      "defence": name, "target_epsilon": None if math.isinf(eps) else eps,
      "accountant_epsilon": (max(info["epsilons"]) if "epsilons" in info
                             else float("inf")),
      "delta": delta, "train_info": info,
      "train_accuracy_mean": float(train_acc.mean()),
      "test_accuracy_mean": float(test_acc.mean()),
      "attacks": [r.summary() for r in results],
      "empirical_epsilon": lb,
      "empirical_epsilon_per_attack": bounds,
      "canary_rows": rows,
      "canaries": _report.summarise_canaries(
          rows, data.canaries[0].pattern.num_candidates)})
  with open(cached, "w") as f:
    json.dump(out, f, indent=1)
  return out


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        stop_after: int | None = None,
        log: Callable[[str], None] = print) -> dict:
  """Runs the whole audit; returns the report dict (also in report.json).

  A rerun with the same config reuses finished defences and resumes the
  unfinished one from its models' checkpoints (bit-identical to an
  uninterrupted run on the same machine). With `stop_after`, each defence
  this call trains stops after that many more steps (checkpointed, as a
  kill would); the first one left unfinished ends the call, which returns
  `{"stopped_at": {"defence": name, "steps": stop_after}}`.
  """
  from trustjax import experiment as tjx
  validate_config(config)
  tjx.prepare_workdir(workdir, config, overwrite=overwrite)
  t0 = time.perf_counter()
  data = load_audit_data(config)
  masks = membership_masks(config, data.owner)
  log(f"data: {data.encoded.source}; {len(data.owner)} training rows "
      f"({int((data.owner >= 0).sum())} canary rows), {config.num_models} "
      "models per defence")
  sections = []
  for e in config.epsilons:
    sec = run_defence(config, data, masks, float(e), workdir, log,
                      stop_after=stop_after)
    if sec is None:
      return {"stopped_at": {"defence": defence_name(float(e)),
                             "steps": stop_after}}
    sections.append(sec)
  report = {"data": data.encoded.source, "num_models": config.num_models,
            "num_train_rows": int(len(data.owner)),
            "canary_template": config.canary.template,
            "seconds": round(time.perf_counter() - t0, 1),
            "defences": sections}
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  _report.write_markdown(report, os.path.join(workdir, "report.md"))
  plot_canaries(report, workdir)
  return report


def plot_canaries(report: dict, workdir: str) -> None:
  """exposure.png and extraction.png: per defence, against repetitions."""
  from trustjax.experiment.plots import line_plot
  xs, expo, succ = {}, {}, {}
  for sec in report["defences"]:
    reps = [r["repetitions"] for r in sec["canaries"]]
    xs[sec["defence"]] = [max(r, 0.5) for r in reps]
    expo[sec["defence"]] = [float(r["exposure_mean"])
                            for r in sec["canaries"]]
    succ[sec["defence"]] = [float(r["extraction_rate"])
                            for r in sec["canaries"]]
  line_plot(os.path.join(workdir, "exposure.png"), xs, expo,
            xlabel="repetitions (0 plotted at 0.5)", ylabel="exposure (bits)",
            title="canary exposure", logx=True)
  line_plot(os.path.join(workdir, "extraction.png"), xs, succ,
            xlabel="repetitions (0 plotted at 0.5)",
            ylabel="extraction success rate", title="white-box extraction",
            logx=True)
