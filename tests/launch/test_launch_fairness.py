"""launch.fairness smoke: trains tiny GPT-2s, writes rows, table, plot.

About 67 s alone on an idle 2-core machine (5 minutes when other jobs load
it); part of `make test` so the job's wiring is exercised in CI.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from conftest import data_dir_or_skip


def test_fairness_smoke(tmp_path):
  data = data_dir_or_skip("bold", "profession_wiki.json")
  root = os.path.dirname(os.path.dirname(data))
  env = dict(os.environ, TRUSTJAX_DATA_DIR=root)
  work = tmp_path / "fair"
  subprocess.run([sys.executable, "-m", "launch.fairness",
                  "--config=configs/fairness_gender.py:smoke",
                  f"--workdir={work}"], cwd=REPO_ROOT, env=env, check=True,
                 timeout=1200)
  res = json.loads((work / "results.json").read_text())
  assert len(res["rows"]) == 3
  for row in res["rows"]:
    for k in ("ceat_weat8", "eo_difference", "dp_difference", "cf_gap",
              "gen_disparity", "probe_accuracy"):
      assert k in row and row[k] == row[k] or k == "cf_gap"
    assert 0.0 <= row["eo_difference"] <= 1.0
  assert "ceat_mean_abs~cf_gap" in res["spearman"]
  assert (work / "table.md").read_text().startswith("| model |")
  assert (work / "scatter.png").stat().st_size > 1000
  with pytest.raises(subprocess.CalledProcessError):   # < 2 models: refused
    subprocess.run([sys.executable, "-m", "launch.fairness",
                    "--config=configs/fairness_gender.py",
                    f"--workdir={tmp_path / 'bad'}"], cwd=REPO_ROOT,
                   env=env, check=True, timeout=600, capture_output=True)
