r"""Intrinsic vs extrinsic bias of a set of GPT-2 models, and their agreement
(the job behind `launch/fairness.py`).

  python -m launch.fairness --config=configs/fairness_gender.py \
      --config.models="('runs/distill_a/model','runs/distill_b/model')" \
      --workdir=runs/fairness

For each model (HF-format GPT-2 dirs from `config.models`; the `smoke`
variant trains tiny ones itself, with and without counterfactual data
augmentation):
- intrinsic: CEAT (Guo & Caliskan 2021) combined effect sizes of the gender
  tests (`config.ceat.tests`) on contextual embeddings from BOLD Wikipedia;
- extrinsic: a linear probe trained on the model's mean-pooled final hidden
  states for BOLD profession classification; its equalized-odds and
  demographic-parity differences between male- and female-word sentences
  (one-vs-rest, worst class) and its counterfactual token fairness gap
  (gendered words swapped); generation polarity disparity on BOLD gender
  prompts (`config.generation.num_prompts` > 0).
Writes `results.json` (rows and Spearman rank correlations across models of
every intrinsic x extrinsic pair), `table.md` and `scatter.png`.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy import stats

from trustjax import fairness as F
from trustjax import markdown
from trustjax import models as M
from trustjax.distill.corpus import tokenizer_for_model
from trustjax.experiment.plots import scatter_plot
from trustjax.experiment.workdir import prepare_workdir
from trustjax.fairness.ceat import ceat as run_ceat


def _label(model_dir: str) -> str:
  """A model's name in tables: `<sweep>/<run>` for `<sweep>/<run>/model`
  (distillation workdirs), else the dir's own name."""
  d = os.path.normpath(model_dir)
  if os.path.basename(d) != "model":
    return os.path.basename(d)
  run = os.path.dirname(d)
  return os.path.join(os.path.basename(os.path.dirname(run)),
                      os.path.basename(run))


def _encode(tok, texts, max_len):
  ids = np.zeros((len(texts), max_len), np.int32)
  mask = np.zeros((len(texts), max_len), np.int32)
  for i, t in enumerate(texts):
    e = tok.encode(t).ids[:max_len]
    ids[i, :len(e)], mask[i, :len(e)] = e, 1
  return ids, mask


def train_smoke_models(cfg, tok, corpus, out_dir):
  """Tiny GPT-2s trained on BOLD gender sentences (+CDA when asked)."""
  swapper = F.CounterfactualSwapper()
  dirs = []
  for spec in cfg.smoke_models:
    name, cda, seed = spec.split(":")
    texts = corpus + ([swapper.swap(t) for t in corpus] if cda == "cda"
                      else [])
    ids, mask = _encode(tok, texts, cfg.max_len)
    gcfg = M.GPT2Config(n_embd=cfg.smoke_width, n_layer=1, n_head=2,
                        n_positions=cfg.max_len)
    model = M.GPT2LMHeadModel(gcfg, rngs=nnx.Rngs(int(seed)))
    gd, state = nnx.split(model)
    opt = optax.adam(3e-3)
    ostate = opt.init(state)

    @jax.jit
    def step(state, ostate, i, m):
      def loss(s):
        return M.causal_lm_loss(nnx.merge(gd, s)(i, attention_mask=m),
                                i, m).mean()
      l, g = jax.value_and_grad(loss)(state)
      u, ostate = opt.update(g, ostate, state)
      return optax.apply_updates(state, u), ostate, l
    rng = np.random.default_rng(int(seed))
    for _ in range(cfg.smoke_steps):
      b = rng.integers(0, len(ids), 32)
      state, ostate, _ = step(state, ostate, ids[b], mask[b])
    d = os.path.join(out_dir, name)
    M.save_gpt2(nnx.merge(gd, state), d)
    dirs.append(d)
  return dirs


def pooled_features(model, tok, texts, max_len, batch=64):
  fn = F.gpt2_embed_fn(model)
  out = []
  for s in range(0, len(texts), batch):
    ids, mask = _encode(tok, texts[s:s + batch], max_len)
    h = np.asarray(fn(ids, mask))
    out.append((h * mask[..., None]).sum(1) / np.maximum(
        mask.sum(1, keepdims=True), 1))
  return np.concatenate(out)


def extrinsic(model, tok, task, cfg):
  """Probe on pooled states: group gaps and counterfactual gap."""
  xtr = pooled_features(model, tok, task["train"], cfg.max_len)
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
  k = int(task["labels"].max()) + 1
  w = jnp.zeros((xtr.shape[1], k))
  opt = optax.adam(0.05)
  st = opt.init(w)
  ytr = jnp.asarray(task["train_y"])
  xn = jnp.asarray((xtr - mu) / sd)

  @jax.jit
  def step(w, st):
    g = jax.grad(lambda w: optax.softmax_cross_entropy_with_integer_labels(
        xn @ w, ytr).mean())(w)
    u, st = opt.update(g, st)
    return optax.apply_updates(w, u), st
  for _ in range(cfg.probe_steps):
    w, st = step(w, st)

  def predict(texts):
    x = (pooled_features(model, tok, list(texts), cfg.max_len) - mu) / sd
    return jax.nn.softmax(jnp.asarray(x) @ w, -1)
  probs = np.asarray(predict(task["test"]))
  y, g = task["labels"], task["groups"]
  yhat = probs.argmax(-1)
  cf = F.counterfactual_fairness(predict, task["test"],
                                 swap_fn=F.CounterfactualSwapper().swap,
                                 groups=g)
  return {"probe_accuracy": float(np.mean(yhat == y)),
          "eo_difference": F.equalized_odds_difference(y, yhat, g,
                                                       pos_label=None),
          "dp_difference": F.demographic_parity_difference(y, yhat, g,
                                                           pos_label=None),
          "cf_gap": cf.mean_changed}


def build_task(cfg, data_dir):
  """BOLD profession sentences with exactly one gender's words."""
  raw = json.load(open(os.path.join(data_dir, "bold", "profession_wiki.json")))
  male, female = F.male_words(), F.female_words()
  rows = []
  for li, grp in enumerate(sorted(raw)[:cfg.task.num_classes]):
    for sents in raw[grp].values():
      for s in sents:
        words = set(s.lower().replace(".", " ").replace(",", " ").split())
        m, f = bool(words & male), bool(words & female)
        if m != f:
          rows.append((s, li, "male" if m else "female"))
  rng = np.random.default_rng(0)
  rows = [rows[i] for i in rng.permutation(len(rows))[:cfg.task.max_rows]]
  half = len(rows) // 2
  return {"train": [r[0] for r in rows[:half]],
          "train_y": np.array([r[1] for r in rows[:half]]),
          "test": [r[0] for r in rows[half:]],
          "labels": np.array([r[1] for r in rows[half:]]),
          "groups": np.array([r[2] for r in rows[half:]])}


def generation_disparity(model, tok, cfg, data_dir):
  raw = json.load(open(os.path.join(data_dir, "bold", "gender_prompt.json")))
  prompts, groups = [], []
  for grp in sorted(raw):
    for ps in list(raw[grp].values())[:cfg.generation.num_prompts]:
      prompts.append(ps[0])
      groups.append(grp)
  p = cfg.max_len - cfg.generation.max_new_tokens
  ids = np.zeros((len(prompts), p), np.int32)
  mask = np.zeros_like(ids)
  for i, t in enumerate(prompts):          # left padding
    e = tok.encode(t).ids[-p:]
    ids[i, p - len(e):], mask[i, p - len(e):] = e, 1
  out = np.asarray(M.generate(model, ids, mask, greedy=True,
                              max_new_tokens=cfg.generation.max_new_tokens))
  texts = [tok.decode(r.tolist()) for r in out]
  summary = F.evaluate_generations(texts, groups, ["gender"] * len(texts))
  return {"gen_disparity": summary["summary"]["gender_disparity"]}


def run(cfg, workdir: str, *, overwrite: bool = False) -> dict:
  """Runs the comparison; returns `{"rows", "spearman", "table"}` and writes
  results.json, table.md and scatter.png to `workdir`."""
  data_dir = cfg.data_dir or os.environ.get("TRUSTJAX_DATA_DIR")
  if not data_dir:
    raise FileNotFoundError(
        "set config.data_dir or TRUSTJAX_DATA_DIR (BOLD, WEAT data)")
  logging_dir = prepare_workdir(workdir, cfg, overwrite=overwrite)
  tok = M.gpt2_tokenizer()
  corpus = F.bold_sentences(data_dir)
  models = list(cfg.models)
  if cfg.smoke_models:
    gender = F.bold_sentences(data_dir, domains=("gender",))
    models = train_smoke_models(cfg, tok, gender,
                                os.path.join(logging_dir, "models"))
  if len(models) < 2:
    raise ValueError(f"config.models={models}: need >= 2 models to rank")
  tests = F.load_weat_tests(data_dir)
  task = build_task(cfg, data_dir)
  rows = []
  base_tok = tok
  for d in models:
    model = M.load_gpt2(d)
    # Distillation models use a corpus-restricted vocabulary (vocab.json).
    tok = tokenizer_for_model(d, base_tok)
    row = {"model": d}
    for name in cfg.ceat.tests:
      t = tests[name]
      sents = F.find_sentences(corpus, t.words(),
                               max_per_word=cfg.ceat.max_per_word)
      sents = {w: s for w, s in sents.items() if s}
      kept, _ = F.resolve_words(t, sents, on_missing=cfg.ceat.on_missing)
      emb = F.contextual_embeddings(F.gpt2_embed_fn(model), tok, sents,
                                    max_len=cfg.max_len)
      r = run_ceat(emb, t, num_samples=cfg.ceat.num_samples,
                 on_missing=cfg.ceat.on_missing)
      row[f"ceat_{name}"] = r.meta.ces
    row["ceat_mean_abs"] = float(np.mean(
        [abs(row[f"ceat_{n}"]) for n in cfg.ceat.tests]))
    row.update(extrinsic(model, tok, task, cfg))
    if cfg.generation.num_prompts > 0:
      row.update(generation_disparity(model, tok, cfg, data_dir))
    rows.append(row)
    print(json.dumps(row), flush=True)
  intr = [k for k in rows[0] if k.startswith("ceat_")]
  extr = [k for k in rows[0] if k not in intr and k not in (
      "model", "probe_accuracy")]
  corr = {}
  for a in intr:
    for b in extr:
      rho, p = stats.spearmanr([r[a] for r in rows], [r[b] for r in rows])
      corr[f"{a}~{b}"] = {"spearman": float(rho), "p_value": float(p)}
  with open(os.path.join(logging_dir, "results.json"), "w") as f:
    json.dump({"rows": rows, "spearman": corr}, f, indent=1)
  cols = ["model"] + intr + extr + ["probe_accuracy"]
  table = "\n".join([
      markdown.table(cols, [[_label(str(r[c])) if c == "model" else
                             f"{r[c]:.4f}" for c in cols] for r in rows]),
      "", markdown.table(["intrinsic ~ extrinsic", "Spearman rho", "p"],
                         [[k, f"{v['spearman']:.3f}", f"{v['p_value']:.3f}"]
                          for k, v in corr.items()])])
  with open(os.path.join(logging_dir, "table.md"), "w") as f:
    f.write(table + "\n")
  scatter_plot(os.path.join(logging_dir, "scatter.png"),
               [r["ceat_mean_abs"] for r in rows],
               {b: [r[b] for r in rows] for b in extr},
               xlabel="intrinsic: mean |CEAT effect size|",
               ylabel="extrinsic bias", title="intrinsic vs extrinsic")
  return {"rows": rows, "spearman": corr, "table": table}
