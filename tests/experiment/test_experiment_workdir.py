"""prepare_workdir: config identity, refusal, overwrite, resume."""
import json
import os

import numpy as np
import pytest
from ml_collections import config_dict

from trustjax.experiment import config_diff
from trustjax.experiment import config_hash
from trustjax.experiment import config_to_dict
from trustjax.experiment import prepare_workdir


def _config(lr=0.1, hidden=(64, 32)):
  c = config_dict.ConfigDict()
  c.seed = 0
  c.optimizer = config_dict.ConfigDict({"name": "adam", "learning_rate": lr})
  c.model = config_dict.ConfigDict({"hidden": hidden})
  c.delta = config_dict.placeholder(float)
  c.log_every = 10
  return c


def test_writes_json_safe_config(tmp_path):
  path = prepare_workdir(tmp_path / "run", _config())
  saved = json.loads((path / "config.json").read_text())
  assert saved == {"seed": 0, "log_every": 10, "delta": None,
                   "optimizer": {"name": "adam", "learning_rate": 0.1},
                   "model": {"hidden": [64, 32]}}
  assert config_to_dict({"a": np.float32(0.5), "b": np.arange(2),
                         "c": float("nan")}) == {"a": 0.5, "b": [0, 1],
                                                 "c": "nan"}


def test_same_config_resumes_and_keeps_files(tmp_path):
  wd = tmp_path / "run"
  prepare_workdir(wd, _config())
  (wd / "checkpoints").mkdir()
  (wd / "checkpoints" / "marker").write_text("x")
  # A dict equal to the ConfigDict (tuple vs list) is the same config.
  prepare_workdir(wd, config_to_dict(_config()))
  prepare_workdir(wd, _config())
  assert (wd / "checkpoints" / "marker").read_text() == "x"


def test_different_config_refused_naming_keys(tmp_path):
  wd = tmp_path / "run"
  prepare_workdir(wd, _config())
  (wd / "metrics.jsonl").write_text('{"step": 1}\n')
  before = sorted(os.listdir(wd))
  with pytest.raises(ValueError) as e:
    prepare_workdir(wd, _config(lr=0.5, hidden=(64,)))
  msg = str(e.value)
  assert "optimizer.learning_rate: 0.1 -> 0.5" in msg
  assert "model.hidden: [64, 32] -> [64]" in msg
  assert "--overwrite" in msg and "seed" not in msg
  assert sorted(os.listdir(wd)) == before
  assert json.loads((wd / "config.json").read_text())["optimizer"][
      "learning_rate"] == 0.1


def test_overwrite_clears_old_run(tmp_path):
  wd = tmp_path / "run"
  prepare_workdir(wd, _config())
  (wd / "checkpoints" / "5").mkdir(parents=True)
  (wd / "checkpoints" / "5" / "state").write_text("old")
  (wd / "metrics.jsonl").write_text('{"step": 5}\n')
  prepare_workdir(wd, _config(lr=0.5), overwrite=True)
  assert sorted(os.listdir(wd)) == ["config.json"]
  assert json.loads((wd / "config.json").read_text())["optimizer"][
      "learning_rate"] == 0.5


def test_overwrite_never_wipes_a_foreign_directory(tmp_path):
  (tmp_path / "precious.txt").write_text("keep")
  with pytest.raises(ValueError, match="not a trustjax workdir"):
    prepare_workdir(tmp_path, _config(), overwrite=True)
  assert (tmp_path / "precious.txt").read_text() == "keep"


def test_ignored_keys_and_hash(tmp_path):
  wd = tmp_path / "run"
  prepare_workdir(wd, _config())
  other = _config()
  other.log_every = 99
  with pytest.raises(ValueError, match="log_every: 10 -> 99"):
    prepare_workdir(wd, other)
  prepare_workdir(wd, other, ignore=("log_every",))
  assert json.loads((wd / "config.json").read_text())["log_every"] == 99
  assert config_hash(_config()) == config_hash(config_to_dict(_config()))
  assert config_hash(_config()) != config_hash(other)
  assert config_hash(_config(), ignore=("log_every",)) == config_hash(
      other, ignore=("log_every",))
  assert config_diff({"a": {"b": 1}}, {"a": {"b": 1.0}, "c": 2}) == [
      "a.b: 1 -> 1.0", "c: <absent> -> 2"]


def test_corrupt_config_json_is_refused(tmp_path):
  wd = tmp_path / "run"
  prepare_workdir(wd, _config())
  (wd / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON.*--overwrite"):
    prepare_workdir(wd, _config())


def test_load_config_variant_and_overrides(tmp_path):
  from trustjax.experiment import load_config
  path = tmp_path / "cfg.py"
  path.write_text(
      "from ml_collections import config_dict\n"
      "def get_config(arg=None):\n"
      "  c = config_dict.ConfigDict()\n"
      "  c.a = 1 if arg is None else 2\n"
      "  c.sub = config_dict.ConfigDict({'b': 3})\n"
      "  return c\n")
  assert load_config(path).a == 1
  c = load_config(path, "x", {"sub.b": 7})
  assert (c.a, c.sub.b) == (2, 7)
  with pytest.raises(KeyError, match="sub.nope"):
    load_config(path, None, {"sub.nope": 1})
  with pytest.raises(FileNotFoundError):
    load_config(tmp_path / "missing.py")


def test_check_only_makes_the_same_checks_and_writes_nothing(tmp_path):
  # Multi-host jobs check on every process and write on process 0 only.
  wd = tmp_path / "run"
  prepare_workdir(wd, _config(), write=False)
  assert not wd.exists()
  prepare_workdir(wd, _config())
  other = _config(lr=0.5)
  with pytest.raises(ValueError, match="different config"):
    prepare_workdir(wd, other, write=False)
  (wd / "metrics.jsonl").write_text("{}\n")
  prepare_workdir(wd, other, overwrite=True, write=False)
  assert (wd / "metrics.jsonl").exists()          # not wiped
  assert json.loads((wd / "config.json").read_text())["optimizer"][
      "learning_rate"] == 0.1
