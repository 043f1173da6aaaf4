"""WordVocab: tokenisation, building from training texts, encode, IO."""

import numpy as np
import pytest

from trustjax.data import tokenize_words
from trustjax.data import WordVocab


def test_tokenize_lowercases_and_splits_punctuation():
  assert tokenize_words("Hello, World! Don't stop.") == [
      "hello", ",", "world", "!", "don't", "stop", "."]


def test_build_counts_and_limits():
  texts = ["b a a", "c a b", "d"]
  vocab = WordVocab.build(texts, max_size=4)
  # pad, unk, then by decreasing count (ties alphabetical): a(3), b(2).
  assert len(vocab) == 4
  assert vocab.words == ["<pad>", "<unk>", "a", "b"]
  assert WordVocab.build(texts, max_size=100, min_count=2).words[2:] == [
      "a", "b"]
  with pytest.raises(ValueError, match="max_size"):
    WordVocab.build(texts, max_size=2)


def test_encode_pads_truncates_and_maps_unknown():
  vocab = WordVocab.build(["the cat sat", "the dog"], max_size=10)
  ids, mask = vocab.encode(["The cat ran", "", "the the the the the"], 4)
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert ids.shape == mask.shape == (3, 4)
  the, cat = vocab.index["the"], vocab.index["cat"]
  np.testing.assert_array_equal(ids[0], [the, cat, WordVocab.unk_id, 0])
  np.testing.assert_array_equal(mask[0], [True, True, True, False])
  assert not mask[1].any() and (ids[1] == WordVocab.pad_id).all()
  assert mask[2].all() and (ids[2] == the).all()


def test_save_load_round_trip(tmp_path):
  texts = ["über café, naïve!", "plain words here", "café again"]
  vocab = WordVocab.build(texts, max_size=50)
  path = str(tmp_path / "vocab.json")
  vocab.save(path)
  loaded = WordVocab.load(path)
  assert loaded.words == vocab.words and len(loaded) == len(vocab)
  for a, b in zip(vocab.encode(texts, 6), loaded.encode(texts, 6)):
    np.testing.assert_array_equal(a, b)
