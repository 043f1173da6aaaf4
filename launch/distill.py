r"""Counterfactual distillation (or plain LM training of the teacher).

  python -m launch.distill --config=configs/distill_bold.py:teacher \
      --workdir=runs/distill_bold/teacher
  python -m launch.distill --config=configs/distill_bold.py:cda_tpp \
      --workdir=runs/distill_bold/cda_tpp

Every option lives in the config (`--config.tpp.method=mean`, ...). A workdir
holding a different config is refused unless `--overwrite`; a rerun with the
same config resumes from its last checkpoint. `--table=DIR` instead prints
one markdown table comparing the summary.json of every run under DIR.
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/distill_bold.py", "Distillation config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/distill", "Output directory.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a workdir that holds a different config.")
_TABLE = flags.DEFINE_string(
    "table", "", "Print the comparison table of the runs under this folder.")

COLUMNS = ("run", "heldout_ppl", "profession_disparity",
           "profession_overall_gap", "profession_frac_male",
           "profession_frac_female", "gender_disparity",
           "profession_sentiment", "profession_wavg")


def table(root: str) -> str:
  """Markdown table of every `root/*/summary.json`, with the change of the
  profession disparity and perplexity relative to the `plain` run."""
  from trustjax.fairness.generation import markdown_table
  rows = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "summary.json")
    if os.path.exists(path):
      with open(path) as f:
        rows.append({"run": name, **json.load(f)})
  for r in rows:
    if "profession_frac_male" in r:
      r["profession_overall_gap"] = abs(r["profession_frac_male"]
                                        - r["profession_frac_female"])
  base = next((r for r in rows if r["run"] == "plain"), None)
  for r in rows:
    if base is not None and base.get("profession_disparity"):
      r["disparity_vs_plain"] = (r.get("profession_disparity", float("nan"))
                                 / base["profession_disparity"] - 1.0)
      r["overall_gap_vs_plain"] = (r["profession_overall_gap"]
                                   / base["profession_overall_gap"] - 1.0)
      r["ppl_vs_plain"] = r["heldout_ppl"] / base["heldout_ppl"] - 1.0
  cols = list(COLUMNS) + (["disparity_vs_plain", "overall_gap_vs_plain",
                           "ppl_vs_plain"]
                          if base is not None else [])
  return markdown_table(rows, cols)


def main(argv):
  del argv
  if _TABLE.value:
    print(table(_TABLE.value))
    return
  from trustjax.distill import job
  common.quiet_logs()
  try:
    summary = job.run(_CONFIG.value, _WORKDIR.value,
                      overwrite=_OVERWRITE.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(f"\n{summary['mode']} run finished ({_WORKDIR.value}):")
  for k, v in summary.items():
    print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")


if __name__ == "__main__":
  app.run(main)
