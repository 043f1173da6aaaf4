"""CLINC150 builder and loader: mocked (no files), real data, fallbacks."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import data_dir_or_skip
from trustjax.data import clinc150
from trustjax.data import Clinc150
from trustjax.data import load_clinc150


def test_builder_under_mock_data_needs_no_files(tmp_path):
  with tfds.testing.mock_data(num_examples=7):
    builder = Clinc150(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    data = clinc150.read_prepared(builder)
  for split in (data.train, data.val, data.test):
    assert len(split) == 7
    assert all(isinstance(t, str) for t in split.texts)
    assert split.labels.dtype == np.int32
    assert np.all((split.labels >= 0) & (split.labels <= 150))
  assert len(data.label_names) == 151 and data.label_names[150] == "oos"


def test_label_feature_has_names(tmp_path):
  builder = Clinc150(data_dir=str(tmp_path), file_format="array_record")
  label = builder.info.features["label"]
  assert label.num_classes == 151
  assert label.names[150] == "oos"
  assert label.names[:150] == sorted(label.names[:150])


def test_missing_data_raises_naming_paths_and_fix(tmp_path, monkeypatch):
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError) as e:
    load_clinc150(missing, cache_dir=str(tmp_path / "cache"), download=False)
  msg = str(e.value)
  assert missing in msg and "TRUSTJAX_DATA_DIR" in msg and "data_dir" in msg


def test_offline_download_fails_fast(tmp_path, monkeypatch):
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  monkeypatch.setattr(clinc150._tfds, "reachable", lambda url: False)
  with pytest.raises(FileNotFoundError, match="raw.githubusercontent.com"):
    load_clinc150(cache_dir=str(tmp_path / "cache"))


def test_synthetic_fallback_is_loud(tmp_path, monkeypatch, capsys, caplog):
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  missing = str(tmp_path / "nowhere")
  with caplog.at_level(logging.WARNING):
    data = load_clinc150(missing, cache_dir=str(tmp_path / "cache"),
                         allow_synthetic=True, download=False)
  assert "SYNTHETIC" in data.source
  err = capsys.readouterr().err
  for needle in ("SYNTHETIC", missing, "TRUSTJAX_DATA_DIR", "data_dir"):
    assert needle in err
  assert any("SYNTHETIC" in r.getMessage() for r in caplog.records)
  assert data.oos_label == len(data.label_names) - 1


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  path = data_dir_or_skip("clinc150", "data_full.json")
  cache = str(tmp_path_factory.mktemp("tfds"))
  with open(path) as f:
    raw = json.load(f)
  return raw, cache, path


def test_real_counts_labels_and_order(real):
  raw, cache, path = real
  data = load_clinc150(os.path.dirname(path), cache_dir=cache)
  assert path in data.source
  assert data.oos_label == 150 and data.label_names[150] == "oos"
  names = data.label_names
  for split, key, n_in, n_oos in ((data.train, "train", 15000, 100),
                                  (data.val, "val", 3000, 100),
                                  (data.test, "test", 4500, 1000)):
    assert len(split) == n_in + n_oos
    assert int(np.sum(split.labels != 150)) == n_in
    assert int(np.sum(split.labels == 150)) == n_oos
    # Independent reference: the JSON rows, in file order.
    expected = raw[key] + [[t, "oos"] for t, _ in raw["oos_" + key]]
    assert split.texts == [t for t, _ in expected]
    assert [names[y] for y in split.labels] == [i for _, i in expected]
  assert len(set(data.train.labels[data.train.labels != 150])) == 150


def test_real_without_oos_and_from_cache(real, monkeypatch):
  _, cache, path = real
  load_clinc150(path, cache_dir=cache)   # prepared (no-op if already)
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  data = load_clinc150(cache_dir=cache, include_oos=False, download=False)
  assert "cache" in data.source
  assert (len(data.train), len(data.val), len(data.test)) == (15000, 3000,
                                                              4500)
  assert data.oos_label is None and len(data.label_names) == 150
  assert data.train.labels.max() == 149


def test_real_via_env(real, monkeypatch):
  _, cache, path = real
  monkeypatch.setenv("TRUSTJAX_DATA_DIR",
                     os.path.dirname(os.path.dirname(path)))
  data = load_clinc150(cache_dir=cache)
  assert path in data.source and len(data.val) == 3100
