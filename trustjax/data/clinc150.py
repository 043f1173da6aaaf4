"""CLINC150 intent classification (Larson et al., EMNLP 2019).

150 in-scope intents over 10 domains plus out-of-scope (`oos`). Rows of
`data_full.json` are `[utterance, intent]` under keys train/val/test and
oos_train/oos_val/oos_test (15000/3000/4500 in-scope, 100/100/1000 oos).

Sources, in order: an explicit `data_dir` (the file itself, its folder, or a
root holding `clinc150/data_full.json`), `$TRUSTJAX_DATA_DIR/clinc150/`, the
public download URL (when online), and, only when `allow_synthetic`, the
embedded synthetic intent set with a loud warning.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from trustjax.data import _tfds
from trustjax.data.types import Split
from trustjax.data.types import TextClassificationData

URL = "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json"
FILE = "data_full.json"
OOS = "oos"


class Clinc150(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for CLINC150 (`data_full.json`); label `oos` is last."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Place {FILE} (github.com/clinc/oos-eval, data/{FILE}) in the manual "
      "dir, or set TRUSTJAX_DATA_DIR to a folder holding clinc150/" + FILE)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="CLINC150 intents + out-of-scope",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(num_classes=151),
            "intent": tfds.features.Text(),
            "is_oos": tfds.features.Scalar(dtype=np.bool_),
        }),
        supervised_keys=("text", "label"),
        homepage="https://github.com/clinc/oos-eval")

  def _split_generators(self, dl_manager):
    local = _tfds.manual_file(dl_manager, FILE)
    if local:
      path = local
    else:
      path = dl_manager.download(URL)
    with open(path) as f:
      raw = json.load(f)
    names = sorted({intent for _, intent in raw["train"]}) + [OOS]
    return {s: self._generate_examples(raw, s, names)
            for s in ("train", "validation", "test")}

  def _generate_examples(self, raw, split, names):
    key = {"validation": "val"}.get(split, split)
    index = {n: i for i, n in enumerate(names)}
    rows = [(t, i, False) for t, i in raw[key]] + \
        [(t, OOS, True) for t, _ in raw[f"oos_{key}"]]
    for k, (text, intent, oos) in enumerate(rows):
      yield k, {"text": text, "label": index[intent], "intent": intent,
                "is_oos": oos}


def find_local_file(data_dir: str | None = None) -> tuple[str | None,
                                                          list[str]]:
  """The local data_full.json, and the paths tried."""
  tried = []
  roots = [data_dir] if data_dir else []
  if os.environ.get("TRUSTJAX_DATA_DIR"):
    roots.append(os.environ["TRUSTJAX_DATA_DIR"])
  for root in roots:
    for p in (root, os.path.join(root, FILE),
              os.path.join(root, "clinc150", FILE)):
      tried.append(p)
      if os.path.isfile(p):
        return p, tried
  return None, tried


def _from_source(source):
  """Per split lists of (text, label), and the label names by id."""
  out, names = [], {}
  for split in ("train", "validation", "test"):
    ds = source[split]
    rows = [ds[i] for i in range(len(ds))]
    # Sort by the builder's example key order is not kept by array_record
    # shuffling; sort by text for a canonical, deterministic order.
    rows.sort(key=lambda r: (_tfds.text(r["text"]), int(r["label"])))
    for r in rows:
      names[int(r["label"])] = _tfds.text(r["intent"])
    out.append([(_tfds.text(r["text"]), int(r["label"])) for r in rows])
  return out, [names[i] for i in range(len(names))]


def load_clinc150(data_dir: str | None = None, *, include_oos: bool = True,
                  allow_synthetic: bool = False,
                  cache_dir: str | None = None) -> TextClassificationData:
  """CLINC150 as a TextClassificationData (labels 0..149, oos = 150).

  Raises:
    FileNotFoundError: no local file, no download, and allow_synthetic False;
      the message lists the paths tried and how to get the data.
  """
  path, tried = find_local_file(data_dir)
  manual = os.path.dirname(path) if path else None
  try:
    if path is None:
      raise FileNotFoundError("no local file")
    builder = _tfds.prepare(Clinc150, cache_dir=cache_dir, manual_dir=manual)
    source_note = f"CLINC150 from {path}"
  except Exception as local_err:   # local missing: try the download
    try:
      builder = _tfds.prepare(Clinc150, cache_dir=cache_dir, manual_dir=None)
      source_note = f"CLINC150 (downloaded from {URL})"
    except Exception as e:
      where = ", ".join(tried) or "(no data_dir; TRUSTJAX_DATA_DIR unset)"
      msg = (f"CLINC150 not found: tried {where}"
             f" and the download {URL} ({type(e).__name__}). Set "
             "TRUSTJAX_DATA_DIR to a folder holding clinc150/data_full.json "
             "or pass data_dir.")
      if path is not None:
        msg += f" Reading the local file failed: {local_err}"
      if not allow_synthetic:
        raise FileNotFoundError(msg) from e
      from trustjax.data.synthetic import synthetic_intents
      banner = "!" * 78
      warning = (f"\n{banner}\nWARNING: {msg}\nFalling back to the EMBEDDED "
                 f"SYNTHETIC intent data set: results are NOT CLINC150 "
                 f"results.\n{banner}\n")
      print(warning, file=sys.stderr, flush=True)
      return synthetic_intents(include_oos=include_oos)
  splits, names = _from_source(builder.as_data_source())
  oos_id = names.index(OOS)
  out = []
  for rows in splits:
    if not include_oos:
      rows = [r for r in rows if r[1] != oos_id]
    out.append(Split([t for t, _ in rows], np.array([y for _, y in rows])))
  label_names = names if include_oos else names[:oos_id]
  return TextClassificationData(
      train=out[0], val=out[1], test=out[2], label_names=list(label_names),
      oos_label=oos_id if include_oos else None, source=source_note)
