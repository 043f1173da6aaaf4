"""BOLD builder and loader."""

import json
import os

import pytest
import tensorflow_datasets as tfds

from conftest import data_dir_or_skip
from trustjax.data import Bold
from trustjax.data import bold
from trustjax.data import load_bold


def test_configs():
  assert {c.name for c in Bold.BUILDER_CONFIGS} == {
      "gender_prompt", "gender_wiki", "profession_prompt", "profession_wiki"}


@pytest.mark.parametrize("config", ["gender_prompt", "profession_wiki"])
def test_builder_under_mock_data(tmp_path, config):
  with tfds.testing.mock_data(num_examples=4):
    builder = Bold(data_dir=str(tmp_path), file_format="array_record",
                   config=config)
    builder.download_and_prepare()
    out = bold.read_prepared(builder)
  assert set(out) == {"domain", "group", "name", "text"}
  assert all(len(v) == 4 for v in out.values())


def test_bad_arguments():
  with pytest.raises(ValueError, match="domain"):
    load_bold("race")
  with pytest.raises(ValueError, match="kind"):
    load_bold("gender", "prompts")


def test_missing_raises(tmp_path, monkeypatch):
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="gender_prompt.json"):
    load_bold(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"),
              download=False)


def test_real_gender_prompts(tmp_path):
  folder = os.path.dirname(data_dir_or_skip("bold", "gender_prompt.json"))
  out = load_bold("gender", "prompt", folder, cache_dir=str(tmp_path))
  assert set(out["group"]) == {"American_actors", "American_actresses"}
  assert set(out["domain"]) == {"gender"}
  with open(os.path.join(folder, "gender_prompt.json")) as f:
    raw = json.load(f)
  expected = [(g, n, t) for g in sorted(raw) for n in sorted(raw[g])
              for t in raw[g][n]]
  assert list(zip(out["group"], out["name"], out["text"])) == expected
  names = {g: {n for gg, n in zip(out["group"], out["name"]) if gg == g}
           for g in raw}
  assert len(names["American_actors"]) == len(raw["American_actors"])
