"""Tiny Shakespeare: speech parsing, client segments, builder, real data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import data_dir_or_skip
from trustjax.data import load_shakespeare
from trustjax.data import parse_speeches
from trustjax.data import shakespeare
from trustjax.data import TinyShakespeare

TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
Second line.

TITUS:

MARCIUS:
They are dissolved: hang 'em!

MARCIUS:
A continued speech block.

ROMEO:
Scene two.

JULIET:
Hello.

ROMEO:
Again.
"""


def test_parse_speeches_by_hand():
  got = parse_speeches(TEXT, window=2)
  assert [s for s, _, _ in got] == ["First Citizen", "All", "First Citizen",
                                    "MARCIUS", "MARCIUS", "ROMEO", "JULIET",
                                    "ROMEO"]
  assert got[2][1] == ("You are all resolved rather to die than to famish?\n"
                       "Second line.")
  # Window 2: before MARCIUS (i=3) the last two speakers are {All, First
  # Citizen}, next two {MARCIUS}: disjoint -> segment 1. Before ROMEO (i=5):
  # {MARCIUS} vs {ROMEO, JULIET}: segment 2.
  assert [c for _, _, c in got] == [
      "First Citizen@0", "All@0", "First Citizen@0", "MARCIUS@1",
      "MARCIUS@1", "ROMEO@2", "JULIET@2", "ROMEO@2"]


def test_parse_speeches_rejects_bad_window():
  with pytest.raises(ValueError, match="window"):
    parse_speeches(TEXT, window=0)


def test_builder_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    builder = TinyShakespeare(data_dir=str(tmp_path),
                              file_format="array_record")
    builder.download_and_prepare()
    out = shakespeare.read_prepared(builder)
  assert len(out["text"]) == len(out["speaker"]) == 6
  assert out["client_index"].dtype == np.int32
  assert [out["client_names"][i] for i in out["client_index"]] == \
      out["client_id"]


def test_missing_raises(tmp_path, monkeypatch):
  monkeypatch.delenv("TRUSTJAX_DATA_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="TRUSTJAX_DATA_DIR"):
    load_shakespeare(str(tmp_path / "x"), cache_dir=str(tmp_path / "c"),
                     download=False)


def test_real_speeches_and_clients(tmp_path):
  path = data_dir_or_skip("tinyshakespeare", "input.txt")
  out = load_shakespeare(path, cache_dir=str(tmp_path))
  with open(path) as f:
    reference = parse_speeches(f.read())
  assert out["speaker"] == [s for s, _, _ in reference]
  assert out["text"][0] == "Before we proceed any further, hear me speak."
  assert out["speaker"][0] == "First Citizen"
  assert len(out["text"]) > 7000
  assert len(set(out["speaker"])) > 250
  assert len(out["client_names"]) > 1000
  # A client is one speaker: every client id starts with its speaker.
  for s, c in zip(out["speaker"], out["client_id"]):
    assert c.rsplit("@", 1)[0] == s
  assert all(t.strip() for t in out["text"])
