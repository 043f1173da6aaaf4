"""DP training on the features of a frozen public sentence encoder
(`data.tokenizer=encoder`, `configs/dp_clinc150.py:encoder`).

A tiny random BERT with a character-level WordPiece vocabulary stands in for
all-MiniLM-L6-v2 so these tests need neither the packaged weights nor much
time; the encoder itself is checked against transformers in
tests/models/test_models_bert.py.
"""

import json
import os

import numpy as np
import pytest
from flax import nnx

from trustjax import models
from trustjax.experiment import classification
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HIDDEN = 16


def _write_tiny_encoder(path):
  from tokenizers import Tokenizer
  from tokenizers import models as tmodels
  from tokenizers import normalizers, pre_tokenizers, processors
  chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
  vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
           + ["##" + c for c in chars] + list(".,?!'$-%&"))
  tok = Tokenizer(tmodels.WordPiece({w: i for i, w in enumerate(vocab)},
                                    unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  cfg = models.BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN,
                          num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=128)
  models.save_bert(models.BertEncoder(cfg, rngs=nnx.Rngs(0)), path)
  return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
  return _write_tiny_encoder(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(autouse=True)
def feature_cache(tmp_path, monkeypatch):
  cache = str(tmp_path / "feature_cache")
  monkeypatch.setenv("TRUSTJAX_FEATURE_CACHE", cache)
  return cache


def _config(encoder_dir, **overrides):
  over = {"data.tokenizer": "encoder", "model.name": "mlp",
          "data.encoder_path": encoder_dir, "data.encoder_max_len": 48,
          "data.max_examples": 300}
  over.update(overrides)
  return load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                     "smoke", over)


def test_features_are_the_encoders_sentence_embeddings(encoder_dir):
  cfg = _config(encoder_dir)
  data = classification.load_data(cfg)
  enc, tok = models.load_sentence_encoder(encoder_dir)
  from trustjax import data as tjdata
  ds = tjdata.load_clinc150(None, include_oos=True, allow_synthetic=True)
  for split, texts in (("train", ds.train.texts), ("test", ds.test.texts)):
    x = data.arrays[split]["x"]
    assert x.dtype == np.float32 and x.shape == (300, HIDDEN)
    assert set(data.arrays[split]) == {"x", "label"}
    ref = models.sentence_embeddings(enc, tok, list(texts[:300]), max_len=48)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(data.arrays["train"]["x"],
                                            axis=1), 1.0, rtol=1e-5)
  assert data.vocab_size == HIDDEN
  assert "costs no privacy" in data.tokenizer_note


def test_features_are_cached_on_disk(encoder_dir, feature_cache, monkeypatch):
  cfg = _config(encoder_dir)
  first = classification.load_data(cfg)
  assert len(os.listdir(feature_cache)) == 3        # train, val, test

  def refuse(*a, **k):
    raise AssertionError("the encoder ran although the features are cached")
  monkeypatch.setattr(models, "load_sentence_encoder", refuse)
  again = classification.load_data(cfg)
  for split in first.arrays:
    np.testing.assert_array_equal(first.arrays[split]["x"],
                                  again.arrays[split]["x"])
  # A damaged cache file is recomputed, not trusted.
  monkeypatch.undo()                     # the encoder may run again ...
  monkeypatch.setenv("TRUSTJAX_FEATURE_CACHE", feature_cache)  # same cache
  victim = os.path.join(feature_cache, sorted(os.listdir(feature_cache))[0])
  np.save(victim, np.zeros((3, HIDDEN), np.float32))
  healed = classification.load_data(cfg)
  for split in first.arrays:
    np.testing.assert_array_equal(first.arrays[split]["x"],
                                  healed.arrays[split]["x"])
  monkeypatch.setattr(models, "load_sentence_encoder", refuse)
  # Another max length (or other texts / encoder files) is another key.
  with pytest.raises(AssertionError, match="encoder ran"):
    classification.load_data(_config(encoder_dir,
                                     **{"data.encoder_max_len": 40}))


def test_dp_job_on_features_accounts_and_resumes_exactly(encoder_dir,
                                                         tmp_path):
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  s_full = classification.run(_config(encoder_dir), full)
  assert classification.run(_config(encoder_dir), part, stop_after=7) == {
      "stopped_at": 7}
  s_part = classification.run(_config(encoder_dir), part)
  read = lambda w: open(os.path.join(w, "metrics.jsonl")).read()
  assert read(full) == read(part)
  for k in ("test_accuracy", "val_accuracy", "epsilon"):
    assert s_full[k] == s_part[k], k
  # A linear probe on the features: F * C weights + C biases.
  c = 151 if "clinc150" in s_full["data"].lower() else None
  if c is not None:
    assert s_full["num_params"] == HIDDEN * c + c
  assert 0 < s_full["epsilon"] <= 8.0
  assert "frozen public encoder" in s_full["privacy_note"]
  with open(os.path.join(full, "summary.json")) as f:
    assert json.load(f)["tokenizer"].startswith("frozen public sentence")


@pytest.mark.parametrize("over", [
    {"model.name": "bag"},                           # features need the mlp
    {"data.tokenizer": "gpt2"},                      # the mlp needs features
    {"data.encoder_max_len": 2},
])
def test_bad_encoder_configs_are_refused(encoder_dir, over):
  cfg = _config(encoder_dir, **over)
  with pytest.raises(ValueError, match=r"model\.name|encoder_max_len"):
    classification.validate_config(cfg)


def test_missing_encoder_directory_is_a_clear_error(tmp_path):
  cfg = _config(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    classification.load_data(cfg)


def test_encoder_variant_is_valid():
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                    "encoder")
  classification.validate_config(cfg)
  assert (cfg.data.tokenizer, cfg.model.name, tuple(cfg.model.hidden)) == (
      "encoder", "mlp", ())
