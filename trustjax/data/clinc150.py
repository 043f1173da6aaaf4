"""CLINC150 intent classification (Larson et al., EMNLP 2019).

"An Evaluation Dataset for Intent Classification and Out-of-Scope
Prediction", https://arxiv.org/abs/1909.02027. 150 in-scope intents over 10
domains plus out-of-scope (`oos`). Rows of `data_full.json` are
`[utterance, intent]` under keys train/val/test (15000/3000/4500 in-scope)
and oos_train/oos_val/oos_test (100/100/1000 out-of-scope).

Labels: the 150 intent names sorted alphabetically get ids 0..149, `oos`
is 150. TFDS splits are `train`, `validation`, `test`; each holds the
in-scope rows followed by the matching oos rows (feature `is_oos`).

Where the file comes from, in order: an explicit `data_dir` (the file
itself, its folder, or a root holding `clinc150/data_full.json`), else
`$TRUSTJAX_DATA_DIR/clinc150/data_full.json`, an already prepared TFDS cache,
the public download URL (when online), and, only when `allow_synthetic`, the
embedded synthetic intent set with a loud warning.
"""

from __future__ import annotations

import json
import os
import sys

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from trustjax.data import _tfds
from trustjax.data._clinc150_intents import INTENTS
from trustjax.data.synthetic import synthetic_intents
from trustjax.data.types import Split
from trustjax.data.types import TextClassificationData

URL = ("https://raw.githubusercontent.com/clinc/oos-eval/master/data/"
       "data_full.json")
FILE = "data_full.json"
SUBDIR = "clinc150"
OOS = "oos"
OOS_LABEL = len(INTENTS)   # 150
LABEL_NAMES = tuple(INTENTS) + (OOS,)
_SPLITS = {"train": "train", "validation": "val", "test": "test"}
_HOWTO = ("Set TRUSTJAX_DATA_DIR to a folder holding clinc150/data_full.json "
          "or pass data_dir= (the file, or its folder); the file is "
          "data/data_full.json of github.com/clinc/oos-eval (" + URL + ").")


class Clinc150(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for CLINC150 `data_full.json`; label 150 is `oos`.

  Features: text, label (ClassLabel with the intent names), intent,
  is_oos, index (position of the row in the split, in file order: in-scope
  rows first, then oos rows).
  """

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional: place {FILE} in the manual dir. {_HOWTO}")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="CLINC150: 150 in-scope intents + out-of-scope (oos).",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
            "intent": tfds.features.Text(),
            "is_oos": tfds.features.Scalar(dtype=np.bool_),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("text", "label"),
        homepage="https://github.com/clinc/oos-eval",
        citation="Larson et al., An Evaluation Dataset for Intent "
                 "Classification and Out-of-Scope Prediction, EMNLP 2019.")

  def _split_generators(self, dl_manager):
    path = _tfds.manual_file(dl_manager, FILE) or dl_manager.download(URL)
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    unknown = sorted({i for k in _SPLITS.values() for _, i in raw[k]}
                     - set(INTENTS))
    if unknown:
      raise ValueError(f"{path}: intents {unknown[:10]} are not CLINC150's "
                       "150 intents; is this data_full.json?")
    return {s: self._generate_examples(raw, k) for s, k in _SPLITS.items()}

  def _generate_examples(self, raw, key):
    rows = [(t, i, False) for t, i in raw[key]]
    rows += [(t, OOS, True) for t, _ in raw[f"oos_{key}"]]
    for k, (text, intent, oos) in enumerate(rows):
      yield k, {"text": text, "label": LABEL_NAMES.index(intent),
                "intent": intent, "is_oos": oos, "index": k}


def read_prepared(builder, *, include_oos: bool = True,
                  source: str = "CLINC150") -> TextClassificationData:
  """A prepared (or mocked) Clinc150 builder as TextClassificationData.

  Rows keep the file order (in-scope rows, then oos rows); with
  `include_oos=False` the oos rows are dropped and labels are 0..149.
  """
  splits = []
  for split in _SPLITS:
    cols = _tfds.read_split(builder, split, ("text", "label", "index"))
    order = np.argsort(np.asarray(cols["index"], np.int64), kind="stable")
    texts = [_tfds.text(cols["text"][i]) for i in order]
    labels = np.asarray(cols["label"], np.int32)[order]
    if not include_oos:
      keep = labels != OOS_LABEL
      texts = [t for t, k in zip(texts, keep) if k]
      labels = labels[keep]
    splits.append(Split(texts, labels))
  names = list(LABEL_NAMES if include_oos else INTENTS)
  return TextClassificationData(
      train=splits[0], val=splits[1], test=splits[2], label_names=names,
      oos_label=OOS_LABEL if include_oos else None, source=source)


def _warn_synthetic(msg: str) -> None:
  banner = "!" * 78
  text = (f"\n{banner}\nWARNING: {msg}\nFALLING BACK TO THE EMBEDDED SYNTHETIC "
          "intent data set (allow_synthetic=True): results are NOT CLINC150 "
          f"results.\n{banner}\n")
  logging.warning(text)
  print(text, file=sys.stderr, flush=True)


def load_clinc150(data_dir: str | None = None, *, include_oos: bool = True,
                  allow_synthetic: bool = False, cache_dir: str | None = None,
                  download: bool = True) -> TextClassificationData:
  """CLINC150 as TextClassificationData (labels 0..149, `oos` = 150).

  Args:
    data_dir: the local `data_full.json`, its folder, or a root holding
      `clinc150/data_full.json`. None: `$TRUSTJAX_DATA_DIR/clinc150/`.
    include_oos: keep the out-of-scope rows (label 150, `oos_label=150`);
      False drops them (150 classes, `oos_label=None`).
    allow_synthetic: when no real data is found, return
      `synthetic_intents()` with a loud warning (absl log and stderr) instead
      of raising. Never used when the real data is available.
    cache_dir: TFDS cache (default $TRUSTJAX_TFDS_DIR or
      ~/.cache/trustjax/tfds).
    download: try the public URL when no local file or cache is found
      (skipped within 3 s when the host is unreachable).

  A prepared TFDS cache is reused as is (TFDS semantics): to re-read a
  changed file, use a fresh `cache_dir` or delete the cached version.

  Returns:
    train/val/test splits of 15000/3000/4500 in-scope rows (+100/100/1000
    oos rows with include_oos), in file order.

  Raises:
    FileNotFoundError: no local file, no prepared cache, no download, and
      allow_synthetic is False; the message lists what was tried and the fix.
  """
  path, tried = _tfds.find_local(FILE, SUBDIR, data_dir)
  builder = _tfds.make_builder(Clinc150, cache_dir)
  errors = []
  if path is not None:
    # A local file that exists but cannot be read is an error, never a
    # reason to fall back to other data.
    _tfds.prepare(builder, manual_dir=os.path.dirname(path))
    return read_prepared(builder, include_oos=include_oos,
                         source=f"CLINC150 from {path}")
  if _tfds.is_prepared(builder):
    return read_prepared(builder, include_oos=include_oos,
                         source=f"CLINC150 (TFDS cache {builder.data_path})")
  if download:
    try:
      _tfds.download_or_raise(builder, URL)
      return read_prepared(builder, include_oos=include_oos,
                           source=f"CLINC150 (downloaded from {URL})")
    except Exception as e:   # pylint: disable=broad-except
      errors.append(f"download of {URL} failed: {type(e).__name__}: "
                    f"{str(e)[:200]}")
  else:
    errors.append("download disabled (download=False)")
  where = ", ".join(tried) or ("nothing local (data_dir=None and "
                               "TRUSTJAX_DATA_DIR unset)")
  msg = (f"CLINC150 not found: tried {where}; the TFDS cache "
         f"{builder.data_path}; {'; '.join(errors)}. {_HOWTO}")
  if not allow_synthetic:
    raise FileNotFoundError(msg)
  _warn_synthetic(msg)
  return synthetic_intents(include_oos=include_oos)
