"""An audit of K models from their scores: pooled attacks and the report.

Given per-example scores of K models that trained on random subsets of one
data set (`lira.shadow_in_masks`), every model is audited in turn with the
other K - 1 as its shadow models and the trials are pooled over targets
(Carlini et al., "Membership Inference Attacks From First Principles",
S&P 2022, section 5: "we train N models ... and evaluate each in turn").
Then empirical epsilon lower bounds of every attack, canary rows summarised
per repetition count, and the markdown report the audit job writes.

Numpy only: training the models and computing their scores is the caller's
job (`trustjax.experiment.audit_job`).
"""

from __future__ import annotations

import math

import numpy as np

from trustjax import markdown
from trustjax.audit import epsilon as _eps
from trustjax.audit import lira as _lira
from trustjax.audit import metrics as _metrics

ATTACKS = ("threshold[loss]", "lira_online", "lira_online_fixed_var",
           "lira_offline", "lira_offline_fixed_var")


def membership_attacks(scores: np.ndarray, losses: np.ndarray,
                       masks: np.ndarray, pop: np.ndarray) -> list:
  """Leave-one-out over targets, pooled: one `AttackResult` per attack.

  Args:
    scores: f[K, N] LiRA scores (e.g. logit-scaled confidence) of the K
      models on all N training rows.
    losses: f[K, N] per-example losses (the global threshold attack).
    masks: bool[K, N] membership (True: row n trained model k).
    pop: indices of the rows to audit (e.g. all but canary rows).

  For target t the trials are the examples with >= 2 IN and >= 2 OUT among
  the other models (what per-example variance needs); the selection depends
  on the shadows' masks only, which are independent of the target's, so it
  does not bias the membership labels. Every attack sees the same trials.
  Returns the attacks in the order of `ATTACKS`.
  """
  k = scores.shape[0]
  s, l, m = scores[:, pop], losses[:, pop], masks[:, pop]
  pooled = {name: ([], []) for name in ATTACKS}
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


def summarise_canaries(rows: list[dict], num_candidates: int) -> list[dict]:
  """One row per repetition count from per-(model, canary) rows (keys
  repetitions, exposure, exposure_skewnorm, rank and, where inverted,
  extracted, slot_accuracy)."""
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


def jsonable(x):
  """`x` with numpy scalars as Python numbers and non-finite floats as the
  strings "inf" / "-inf" / "nan" (`float()` parses them back)."""
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    v = float(x)
    return v if math.isfinite(v) else ("inf" if v > 0 else
                                       "-inf" if v < 0 else "nan")
  if isinstance(x, np.bool_):
    return bool(x)
  return x


def write_markdown(report: dict, path: str) -> None:
  """report.md of the audit job's report dict (`audit_job.run`)."""
  lines = [f"# Privacy audit: {report['data']}", "",
           f"{report['num_models']} models per defence, each model the target "
           "in turn with the others as shadows (pooled); "
           f"{report['num_train_rows']} training rows; canary "
           f"`{report['canary_template']}`; {report['seconds']} s.", "",
           "## Membership inference", "",
           markdown.table(
               ["defence", "accountant eps", "test acc", "train acc",
                "attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "bal. acc",
                "advantage", "PPV"],
               [[s["defence"], s["accountant_epsilon"],
                 s["test_accuracy_mean"], s["train_accuracy_mean"],
                 a["attack"], a["auc"], a["tpr_at_0.1%_fpr"],
                 a["tpr_at_1%_fpr"], a["balanced_accuracy"],
                 a["attacker_advantage"], a["ppv"]]
                for s in report["defences"] for a in s["attacks"]], _fmt)]
  lines += ["", "## Empirical epsilon (best attack; Clopper-Pearson at "
            "alpha / #attacks, threshold chosen on half the trials)", "",
            markdown.table(
                ["defence", "accountant eps", "delta",
                 "empirical eps lower bound", "attack", "TPR", "FPR"],
                [[s["defence"], s["accountant_epsilon"], s["delta"],
                  e["epsilon_lb"], e["attack"], e["tpr"], e["fpr"]]
                 for s in report["defences"]
                 for e in [s["empirical_epsilon"]]], _fmt)]
  lines += ["", "## Canaries (exposure over all models; extraction on the "
            "first models; random guessing succeeds w.p. 1/|R|)", "",
            markdown.table(
                ["defence", "repetitions", "canary x models",
                 "exposure (bits)", "skew-normal exposure (median)",
                 "median rank", "extraction rate", "slot accuracy",
                 "random rate"],
                [[s["defence"], str(r["repetitions"]),
                  str(r["num_canary_models"]), r["exposure_mean"],
                  r["exposure_skewnorm_median"], r["rank_median"],
                  f"{_fmt(r['extraction_rate'])} ({r['num_inversions']})",
                  r["slot_accuracy"], r["random_rate"]]
                 for s in report["defences"] for r in s["canaries"]], _fmt)]
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
