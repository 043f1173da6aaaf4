"""The audit job: shadow models on real data, every attack, one report.

What `launch/audit.py` runs (importable without absl):

  1. Load CLINC150 (optionally a seeded subset of the training split), insert
     canaries (`canaries.make_canaries`: distinct random secrets, each canary
     its own random intent, repetition counts from the config), and tokenise
     with the public GPT-2 BPE hashed into `data.vocab_size` buckets (the
     classification job's `HashedBPE`; data-independent, so epsilon covers
     it). The canary pattern's tokenisation is verified first.
  2. For each defence (epsilon = inf: non-private; else DP-SGD calibrated to
     that epsilon), train K models side by side with `sweeps.vmap_train`:
     model k trains on its own subset (`lira.shadow_in_masks`, independent:
     each ordinary training example IN each model with probability 1/2;
     canary rows IN all).
     DP models use Poisson sampling, per-example clipping
     (`privacy.clipped_grad`), Gaussian noise on the sum divided by the
     expected batch size, and their own PLD accountant (each model's
     sampling rate is its own: q_k = batch_size / n_k).
  3. Membership inference, each model in turn the target and the other K-1
     its shadows, pooled over targets: the global threshold attack on the
     loss, LiRA online/offline with per-example and global variance on the
     logit-scaled confidence. Metrics as in `metrics.AttackResult`, log-log
     ROC plots, and empirical epsilon lower bounds of every attack
     (threshold chosen on half the trials; the largest is reported) next to
     the accountant's epsilon.
  4. Canaries on every model: exposure (exact rank over all candidates, and
     the skew-normal extrapolation from a sample), and white-box extraction
     (`inversion.invert_canary`) on the first `audit.inversion_models`
     models.
  5. `report.md`, `report.json` and PNG plots in the workdir; per-defence
     scores in `<defence>/scores.npz`, reused when the job is rerun with the
     same config (a killed job resumes at the first unfinished defence).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
from ml_collections import config_dict

from trustjax.audit import canaries as _can
from trustjax.audit import epsilon as _eps
from trustjax.audit import lira as _lira
from trustjax.audit import membership as _mem
from trustjax.audit import metrics as _metrics

ConfigDict = config_dict.ConfigDict


def base_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.data = ConfigDict(dict(data_dir="", allow_synthetic=False, max_train=0,
                           vocab_size=8192, max_len=32))
  c.model = ConfigDict(dict(name="transformer", d_model=64, num_layers=1,
                            num_heads=2, d_ff=128, d_embed=64, d_hidden=128,
                            dropout=0.0))
  c.learning_rate = 3e-3
  c.batch_size = 64            # DP: the expected batch size
  c.num_epochs = 20.0          # over each model's own (~N/2) training set
  c.num_models = 8             # K: targets and shadows of each other
  # Defences: epsilon per group of K models; inf = non-private.
  c.epsilons = (float("inf"), 8.0, 1.0)
  c.dp = ConfigDict(dict(l2_clip=1.0, delta=config_dict.placeholder(float),
                         method="auto", accountant="pld"))
  c.canary = ConfigDict(dict(template="my pin code is {d} {d} {d} {d}",
                             repetitions=(0, 1, 4, 16, 64), per_count=4,
                             exposure_sample=2000))
  c.audit = ConfigDict(dict(score="logit_scaled_confidence",
                            inversion_models=2, inversion_restarts=8,
                            inversion_steps=100, alpha=0.05,
                            eval_batch_size=512))
  return c


def validate_config(c: ConfigDict) -> None:
  def bad(name, value, valid):
    raise ValueError(f"config.{name}={value!r} is invalid: {valid}")
  if c.num_models < 6:
    bad("num_models", c.num_models, "must be >= 6 (each model is audited "
        "with the others as shadows; per-example variance needs 2 IN and 2 "
        "OUT shadows per example)")
  if c.batch_size < 1 or c.num_epochs <= 0 or c.learning_rate <= 0:
    bad("batch_size/num_epochs/learning_rate",
        (c.batch_size, c.num_epochs, c.learning_rate), "must be > 0")
  try:
    eps = [float(e) for e in c.epsilons]
  except (TypeError, ValueError):
    eps = []
  if not eps or any(not e > 0 for e in eps):
    bad("epsilons", c.epsilons, "a non-empty list of epsilons > 0 (inf: "
        "non-private)")
  if c.audit.score not in _mem.SCORE_NAMES:
    bad("audit.score", c.audit.score, f"valid: {_mem.SCORE_NAMES}")
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
  train: dict            # ids int32[N,T], mask bool[N,T], label int32[N]
  test: dict
  owner: np.ndarray      # int[N]: canary index of each train row, -1 else
  canaries: list
  tokens: list           # CanaryTokens per canary
  num_classes: int
  vocab_size: int
  source: str


def load_audit_data(c: ConfigDict) -> AuditData:
  from trustjax import data as tjdata
  from trustjax.experiment.classification import HashedBPE
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
  pattern = _can.CanaryPattern(c.canary.template, label=int(labels[0]))
  cans = _can.make_canaries(pattern, reps, per_count=c.canary.per_count,
                            labels=labels, seed=c.seed)
  ds, owner = _can.insert_canaries(ds, cans)
  tok = HashedBPE(c.data.vocab_size)
  tokens = [_can.tokenize_canary(k.pattern, tok, c.data.max_len)
            for k in cans]
  arrays = {}
  for name, split in (("train", ds.train), ("test", ds.test)):
    ids, mask = tok.encode(split.texts, c.data.max_len)
    arrays[name] = {"ids": ids, "mask": mask,
                    "label": np.asarray(split.labels, np.int32)}
  return AuditData(train=arrays["train"], test=arrays["test"], owner=owner,
                   canaries=cans, tokens=tokens, num_classes=ds.num_classes,
                   vocab_size=len(tok), source=ds.source)


def membership_masks(c: ConfigDict, owner: np.ndarray) -> np.ndarray:
  """bool[K, N]: ordinary rows IN each model with probability 1/2
  (independently), canary rows IN all."""
  pop = np.flatnonzero(owner < 0)
  m = np.ones((c.num_models, len(owner)), bool)
  # Independent masks: in leave-one-out, balanced ones would let the
  # shadows' IN count reveal the target's membership (see shadow_in_masks).
  m[:, pop] = _lira.shadow_in_masks(c.num_models, len(pop), seed=c.seed,
                                    balanced=False)
  return m


# --------------------------------------------------------------------------
# Training K models side by side
# --------------------------------------------------------------------------


def train_group(c: ConfigDict, data: AuditData, masks: np.ndarray,
                eps: float, log=print):
  """Trains K models (one per row of `masks`) at `eps`; returns
  (graphdef, rest, stacked params, info dict with per-model epsilons)."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from trustjax import models, privacy, sweeps

  k_models = c.num_models
  sizes = masks.sum(1)
  bs = c.batch_size
  steps = max(1, int(math.ceil(c.num_epochs * sizes.max() / bs)))
  built = [models.build_model(c.model, vocab_size=data.vocab_size,
                              num_classes=data.num_classes,
                              max_len=c.data.max_len,
                              rngs=nnx.Rngs(c.seed * 1000 + k))
           for k in range(k_models)]
  splits = [nnx.split(m, nnx.Param, ...) for m in built]
  graphdef, rest = splits[0][0], splits[0][2]
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  tx = optax.adam(c.learning_rate)
  private = not math.isinf(eps)
  info = {"steps": steps, "train_sizes": sizes.tolist()}

  if private:
    n_max = int(sizes.max())
    delta = c.dp.delta or 1.0 / (n_max ** 1.1)
    # One fixed batch shape for all K models (vmap): the largest of their
    # default (negligible-truncation) maxima; truncation is accounted anyway.
    b_max = max(privacy.default_max_batch_size(int(n), bs / int(n),
                                               1e-9 / steps) for n in sizes)
    samplers, sigmas, epsilons = [], [], []
    for k in range(k_models):
      n_k = int(sizes[k])
      s = privacy.PoissonSampler(n_k, bs / n_k, max_batch_size=b_max,
                                 seed=c.seed * 1000 + k, steps=steps)
      sigma = privacy.calibrate_noise(
          eps, delta, bs / n_k, steps, accountant=c.dp.accountant,
          truncated_batch_size=s.max_batch_size, num_examples=n_k)
      samplers.append(s)
      sigmas.append(sigma)
      epsilons.append(privacy.epsilon(
          sigma, bs / n_k, steps, delta, accountant=c.dp.accountant,
          truncated_batch_size=s.max_batch_size, num_examples=n_k))
    info.update(delta=delta, noise_multipliers=sigmas, epsilons=epsilons,
                l2_clip=c.dp.l2_clip, max_batch_size=samplers[0].max_batch_size)
    grad_fn = privacy.clipped_grad(
        lambda p, b, r: (loss_fn(p, b, r)[0], {}), c.dp.l2_clip,
        method=c.dp.method)
    hps = [{"noise_std": sg * c.dp.l2_clip, "ebs": float(bs)}
           for sg in sigmas]

    def step_fn(state, hp, batch, row_mask, key):
      k_grad, k_noise = jax.random.split(key)
      g_sum, _ = grad_fn(state["params"], batch, row_mask, k_grad)
      g = privacy.add_gaussian_noise(g_sum, hp["noise_std"], hp["ebs"],
                                     k_noise)
      upd, opt = tx.update(g, state["opt"], state["params"])
      return {"params": optax.apply_updates(state["params"], upd),
              "opt": opt}, {}

    def batch_indices(k, t):
      # A sampler's batch length is capped at n_k + 1; pad to the common
      # length with masked rows (they contribute nothing).
      idx, m = samplers[k].batch(t)
      pad = b_max - len(idx)
      if pad:
        idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])
        m = np.concatenate([m, np.zeros(pad, bool)])
      return idx, m
  else:
    hps = [{"unused": 0.0}] * k_models

    def step_fn(state, hp, batch, row_mask, key):
      del hp

      def mean_loss(p):
        per_ex, _ = loss_fn(p, batch, key)
        w = row_mask.astype(per_ex.dtype)
        return jnp.dot(per_ex, w) / jnp.maximum(w.sum(), 1.0)
      g = jax.grad(mean_loss)(state["params"])
      upd, opt = tx.update(g, state["opt"], state["params"])
      return {"params": optax.apply_updates(state["params"], upd),
              "opt": opt}, {}

    def batch_indices(k, t):
      n_k = int(sizes[k])
      per_epoch = max(1, math.ceil(n_k / bs))
      epoch, i = divmod(t, per_epoch)
      perm = np.random.default_rng([c.seed, k, epoch]).permutation(n_k)
      idx = perm[i * bs:(i + 1) * bs]
      out = np.zeros(bs, np.int64)
      out[:len(idx)] = idx
      mask = np.zeros(bs, bool)
      mask[:len(idx)] = True
      return out, mask

  states = [{"params": p, "opt": tx.init(p)} for _, p, _ in splits]
  t0 = time.perf_counter()
  every = max(1, steps // 10)

  def on_step(done, state, metrics):
    del state, metrics
    if done % every == 0 or done == steps:
      el = time.perf_counter() - t0
      log(f"  [{defence_name(eps)}] step {done}/{steps} "
          f"({el:.0f}s, ETA {el / done * (steps - done):.0f}s)")
  train = {k: data.train[k] for k in ("ids", "mask", "label")}
  final = sweeps.vmap_train(step_fn, states, hps, train, batch_indices, steps,
                            seeds=[c.seed * 1000 + k for k in range(k_models)],
                            on_step=on_step, data_masks=masks)
  info["train_seconds"] = round(time.perf_counter() - t0, 1)
  return graphdef, rest, final["params"], info


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
# Attacks
# --------------------------------------------------------------------------


def membership_attacks(scores: np.ndarray, losses: np.ndarray,
                       masks: np.ndarray, pop: np.ndarray) -> list:
  """Leave-one-out over targets, pooled: list of AttackResult.

  For target t the trials are the examples with >= 2 IN and >= 2 OUT among
  the other models (what per-example variance needs); the selection depends
  on the shadows' masks only, which are independent of the target's, so it
  does not bias the membership labels. Every attack sees the same trials.
  """
  k = scores.shape[0]
  s, l, m = scores[:, pop], losses[:, pop], masks[:, pop]
  pooled = {name: ([], []) for name in
            ("threshold[loss]", "lira_online", "lira_online_fixed_var",
             "lira_offline", "lira_offline_fixed_var")}
  for t in range(k):
    x, member, sh, sh_in = _lira.leave_one_out(s, m, t)
    n_in, n_out = _lira.fit_counts(sh_in)
    ok = (n_in >= 2) & (n_out >= 2)
    x, member, sh, sh_in = x[ok], member[ok], sh[:, ok], sh_in[:, ok]
    out = {
        "threshold[loss]": -l[t][ok],
        "lira_online": _lira.lira_online(x, sh, sh_in),
        "lira_online_fixed_var": _lira.lira_online(x, sh, sh_in,
                                                   fix_variance=True),
        "lira_offline": _lira.lira_offline(x, sh, sh_in),
        "lira_offline_fixed_var": _lira.lira_offline(x, sh, sh_in,
                                                     fix_variance=True),
    }
    for name, v in out.items():
      pooled[name][0].append(v[member])
      pooled[name][1].append(v[~member])
  return [_metrics.evaluate_attack(name, np.concatenate(a), np.concatenate(b))
          for name, (a, b) in pooled.items()]


def empirical_epsilons(results: list, delta: float, alpha: float,
                       seed: int) -> list[dict]:
  """Held-out-threshold bound for every attack, each at level
  alpha / len(results) (Bonferroni: the max over attacks holds jointly with
  probability >= 1 - alpha)."""
  out = []
  for r in results:
    b = _eps.empirical_epsilon_heldout(
        r.membership_scores_train, r.membership_scores_test, delta=delta,
        alpha=alpha / len(results), seed=seed)
    out.append({"attack": r.attack_type, **b.as_dict()})
  return out


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
      losses = _can.candidate_losses(
          lambda ids, mask, lab, pk=pk: cand_loss(pk, ids, mask, lab), tok)
      true = int(can.pattern.secret_index(can.secret))
      rng = np.random.default_rng([c.seed, k, i])
      sample = rng.choice(len(losses), min(c.canary.exposure_sample,
                                           len(losses)), replace=False)
      row = {"model": k, "canary": i, "repetitions": can.repetitions,
             "secret": can.pattern.secret_string(can.secret),
             "rank": _can.secret_rank(losses, true),
             "exposure": _can.exposure(losses, true),
             "exposure_skewnorm": _can.exposure_skewnorm(losses[sample],
                                                         losses[true])}
      if k < c.audit.inversion_models:
        from trustjax.audit.inversion import invert_canary
        res = invert_canary(model, tok, can.secret,
                            key=jax.random.key(c.seed * 7919 + k * 101 + i),
                            num_restarts=c.audit.inversion_restarts,
                            num_steps=c.audit.inversion_steps)
        row.update(extracted=res.success, guess=res.guess_text,
                   slot_accuracy=res.slot_accuracy, inversion_rank=res.rank)
      rows.append(row)
    log(f"  canaries on model {k + 1}/{k_models} done")
  return rows


def summarise_canaries(rows: list[dict], num_candidates: int) -> list[dict]:
  out = []
  for r in sorted({row["repetitions"] for row in rows}):
    sel = [row for row in rows if row["repetitions"] == r]
    inv = [row for row in sel if "extracted" in row]
    out.append({
        "repetitions": r, "num_canary_models": len(sel),
        "exposure_mean": float(np.mean([x["exposure"] for x in sel])),
        "exposure_skewnorm_median": float(np.median(
            [x["exposure_skewnorm"] for x in sel])),
        "rank_median": float(np.median([x["rank"] for x in sel])),
        "num_inversions": len(inv),
        "extraction_rate": (float(np.mean([x["extracted"] for x in inv]))
                            if inv else float("nan")),
        "slot_accuracy": (float(np.mean([x["slot_accuracy"] for x in inv]))
                          if inv else float("nan")),
        "random_rate": 1.0 / num_candidates})
  return out


# --------------------------------------------------------------------------
# Job
# --------------------------------------------------------------------------


def run_defence(c: ConfigDict, data: AuditData, masks: np.ndarray, eps: float,
                workdir: str, log=print) -> dict:
  """Trains one group, runs every attack, returns its report section (and
  caches it as <workdir>/<defence>/result.json)."""
  name = defence_name(eps)
  d = os.path.join(workdir, name)
  cached = os.path.join(d, "result.json")
  if os.path.exists(cached):
    log(f"[{name}] reusing {cached}")
    with open(cached) as f:
      return json.load(f)
  os.makedirs(d, exist_ok=True)
  log(f"[{name}] training {c.num_models} models side by side")
  graphdef, rest, params, info = train_group(c, data, masks, eps, log)
  logits = stacked_logits(graphdef, rest, params, data.train,
                          c.audit.eval_batch_size)
  labels = np.broadcast_to(data.train["label"], logits.shape[:2])
  scores = np.asarray(_mem.score(c.audit.score, logits, labels), np.float64)
  losses = np.asarray(_mem.loss(logits, labels), np.float64)
  test_logits = stacked_logits(graphdef, rest, params, data.test,
                               c.audit.eval_batch_size)
  test_acc = (test_logits.argmax(-1) == data.test["label"][None]).mean(1)
  pop = np.flatnonzero(data.owner < 0)
  train_acc = (logits[:, pop].argmax(-1) == data.train["label"][pop]).mean(1)
  np.savez_compressed(os.path.join(d, "scores.npz"), scores=scores,
                      losses=losses, masks=masks)
  results = membership_attacks(scores, losses, masks, pop)
  _metrics.plot_roc(os.path.join(d, "roc.png"), results,
                    title=f"membership inference, {name}")
  delta = info.get("delta", 1.0 / (int(masks.sum(1).max()) ** 1.1))
  bounds = empirical_epsilons(results, delta, c.audit.alpha, c.seed)
  lb = max(bounds, key=lambda b: b["epsilon_lb"])
  log(f"[{name}] canaries")
  rows = canary_audit(c, data, graphdef, rest, params, log)
  out = {"defence": name, "target_epsilon": None if math.isinf(eps) else eps,
         "accountant_epsilon": (max(info["epsilons"]) if "epsilons" in info
                                else float("inf")),
         "delta": delta, "train_info": info,
         "train_accuracy_mean": float(train_acc.mean()),
         "test_accuracy_mean": float(test_acc.mean()),
         "attacks": [r.summary() for r in results],
         "empirical_epsilon": lb,
         "empirical_epsilon_per_attack": bounds,
         "canary_rows": rows,
         "canaries": summarise_canaries(
             rows, data.canaries[0].pattern.num_candidates)}
  with open(cached, "w") as f:
    json.dump(_jsonable(out), f, indent=1)
  return _jsonable(out)


def _jsonable(x):
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    v = float(x)
    return v if math.isfinite(v) else ("inf" if v > 0 else
                                       "-inf" if v < 0 else "nan")
  if isinstance(x, np.bool_):
    return bool(x)
  return x


def _num(x):
  return float(x)   # also parses "inf" / "nan" written by _jsonable


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        log=print) -> dict:
  """Runs the whole audit; returns the report dict (also in report.json)."""
  from trustjax import experiment as tjx
  validate_config(config)
  tjx.prepare_workdir(workdir, config, overwrite=overwrite)
  t0 = time.perf_counter()
  data = load_audit_data(config)
  masks = membership_masks(config, data.owner)
  log(f"data: {data.source}; {len(data.owner)} training rows "
      f"({int((data.owner >= 0).sum())} canary rows), {config.num_models} "
      "models per defence")
  sections = [run_defence(config, data, masks, float(e), workdir, log)
              for e in config.epsilons]
  report = {"data": data.source, "num_models": config.num_models,
            "num_train_rows": int(len(data.owner)),
            "canary_template": config.canary.template,
            "seconds": round(time.perf_counter() - t0, 1),
            "defences": sections}
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  write_markdown(report, os.path.join(workdir, "report.md"))
  plot_canaries(report, workdir)
  return report


def plot_canaries(report: dict, workdir: str) -> None:
  from trustjax.experiment.plots import line_plot
  xs, expo, succ = {}, {}, {}
  for sec in report["defences"]:
    reps = [r["repetitions"] for r in sec["canaries"]]
    xs[sec["defence"]] = [max(r, 0.5) for r in reps]
    expo[sec["defence"]] = [_num(r["exposure_mean"]) for r in sec["canaries"]]
    succ[sec["defence"]] = [_num(r["extraction_rate"])
                            for r in sec["canaries"]]
  line_plot(os.path.join(workdir, "exposure.png"), xs, expo,
            xlabel="repetitions (0 plotted at 0.5)", ylabel="exposure (bits)",
            title="canary exposure", logx=True)
  line_plot(os.path.join(workdir, "extraction.png"), xs, succ,
            xlabel="repetitions (0 plotted at 0.5)",
            ylabel="extraction success rate", title="white-box extraction",
            logx=True)


def write_markdown(report: dict, path: str) -> None:
  lines = [f"# Privacy audit: {report['data']}", "",
           f"{report['num_models']} models per defence, each model the target "
           "in turn with the others as shadows (pooled); "
           f"{report['num_train_rows']} training rows; canary "
           f"`{report['canary_template']}`; {report['seconds']} s.", "",
           "## Membership inference", "",
           "| defence | accountant eps | test acc | train acc | attack | AUC | "
           "TPR@0.1%FPR | TPR@1%FPR | bal. acc | advantage | PPV |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for s in report["defences"]:
    for a in s["attacks"]:
      lines.append(
          f"| {s['defence']} | {_fmt(s['accountant_epsilon'])} | "
          f"{_fmt(s['test_accuracy_mean'])} | "
          f"{_fmt(s['train_accuracy_mean'])} | {a['attack']} | "
          f"{_fmt(a['auc'])} | {_fmt(a['tpr_at_0.1%_fpr'])} | "
          f"{_fmt(a['tpr_at_1%_fpr'])} | {_fmt(a['balanced_accuracy'])} | "
          f"{_fmt(a['attacker_advantage'])} | {_fmt(a['ppv'])} |")
  lines += ["", "## Empirical epsilon (best attack; Clopper-Pearson at "
            "alpha / #attacks, threshold chosen on half the trials)", "",
            "| defence | accountant eps | delta | empirical eps lower bound "
            "| attack | TPR | FPR |", "|---|---|---|---|---|---|---|"]
  for s in report["defences"]:
    e = s["empirical_epsilon"]
    lines.append(f"| {s['defence']} | {_fmt(s['accountant_epsilon'])} | "
                 f"{_fmt(s['delta'])} | {_fmt(e['epsilon_lb'])} | "
                 f"{e['attack']} | {_fmt(e['tpr'])} | {_fmt(e['fpr'])} |")
  lines += ["", "## Canaries (exposure over all models; extraction on the "
            "first models; random guessing succeeds w.p. 1/|R|)", "",
            "| defence | repetitions | canary x models | exposure (bits) | "
            "skew-normal exposure (median) | median rank | extraction rate | "
            "slot accuracy | random rate |",
            "|---|---|---|---|---|---|---|---|---|"]
  for s in report["defences"]:
    for r in s["canaries"]:
      lines.append(
          f"| {s['defence']} | {r['repetitions']} | {r['num_canary_models']} "
          f"| {_fmt(r['exposure_mean'])} | "
          f"{_fmt(r['exposure_skewnorm_median'])} | "
          f"{_fmt(r['rank_median'])} | {_fmt(r['extraction_rate'])} "
          f"({r['num_inversions']}) | {_fmt(r['slot_accuracy'])} | "
          f"{_fmt(r['random_rate'])} |")
  lines += ["", "Plots: `<defence>/roc.png` (log-log ROC), `exposure.png`, "
            "`extraction.png`.", "",
            "Note: the empirical bound is computed over examples of one "
            "training run per model, not over independent runs; it is a "
            "measure of leakage, not a proof of a DP violation.", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def _fmt(x) -> str:
  if isinstance(x, str):
    return x
  if x is None:
    return "-"
  x = float(x)
  if math.isnan(x):
    return "-"
  if math.isinf(x):
    return "inf"
  if x != 0 and abs(x) < 1e-3:
    return f"{x:.1e}"
  return f"{x:.4g}"
