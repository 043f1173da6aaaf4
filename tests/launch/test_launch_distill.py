"""launch/distill.py end to end on real BOLD + Shakespeare with tiny models."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, data_dir_or_skip


def _run(args, env_dir):
  env = dict(os.environ, TRUSTJAX_DATA_DIR=env_dir)
  return subprocess.run([sys.executable, "-m", "launch.distill"] + args,
                        cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_launch_distill_smoke(tmp_path):
  root = data_dir_or_skip()
  data_dir_or_skip("bold", "profession_prompt.json")
  data_dir_or_skip("tinyshakespeare", "input.txt")
  cfg = os.path.join("configs", "distill_bold.py")
  teacher, student = str(tmp_path / "teacher"), str(tmp_path / "smoke")
  r = _run([f"--config={cfg}:smoke_teacher", f"--workdir={teacher}",
            "--config.eval.generate=False"], root)
  assert r.returncode == 0, r.stderr[-3000:]
  r = _run([f"--config={cfg}:smoke", f"--workdir={student}",
            f"--config.teacher_dir={teacher}/model"], root)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "distill run finished" in r.stdout
  for name in ("config.json", "vocab.json", "metrics.jsonl", "summary.json",
               "eval.md", "eval.json", "loss.png", "polarity_profession.png",
               "polarity_gender.png", "model/model.safetensors"):
    assert os.path.exists(os.path.join(student, name)), name
  with open(os.path.join(student, "summary.json")) as f:
    s = json.load(f)
  assert 0 <= s["profession_disparity"] <= 1
  assert -1 <= s["profession_sentiment"] <= 1
  assert s["heldout_ppl"] > 1
  with open(os.path.join(student, "eval.md")) as f:
    md = f.read()
  assert "| group |" in md and "engineering_branches" in md
  # The comparison table reads both runs.
  r = _run([f"--table={tmp_path}"], root)
  assert r.returncode == 0 and "| smoke |" in r.stdout, r.stderr[-2000:]
  # A different config in the same workdir is refused with a clear message.
  r = _run([f"--config={cfg}:smoke", f"--workdir={student}",
            f"--config.teacher_dir={teacher}/model", "--config.cda.p=0.9"],
           root)
  assert r.returncode != 0 and "cda.p" in r.stderr
