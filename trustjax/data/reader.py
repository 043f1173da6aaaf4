"""A reader for a user's own text-classification data (CSV, JSONL, JSON)."""

from __future__ import annotations

import csv
import json
import os
from typing import Mapping, Sequence

import numpy as np

from trustjax.data.types import Split
from trustjax.data.types import TextClassificationData

FORMATS = ("csv", "jsonl", "json")


def _infer_format(path: str) -> str:
  ext = os.path.splitext(path)[1].lower().lstrip(".")
  fmt = {"csv": "csv", "tsv": "csv", "jsonl": "jsonl", "ndjson": "jsonl",
         "json": "json"}.get(ext)
  if fmt is None:
    raise ValueError(f"cannot infer the format of {path!r} from its suffix; "
                     f"pass format= one of {FORMATS}")
  return fmt


def _read_rows(path: str, fmt: str) -> list[dict]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"data file not found: {path}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data path is not a file: {path}")
  with open(path, encoding="utf-8-sig", newline="") as f:
    if fmt == "csv":
      delim = "\t" if path.lower().endswith(".tsv") else ","
      rows = list(csv.DictReader(f, delimiter=delim))
    elif fmt == "jsonl":
      rows = []
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {n}: not valid JSON ({e})") from e
    else:
      content = f.read()
      rows = json.loads(content) if content.strip() else []
      if isinstance(rows, dict):
        rows = rows.get("data", rows.get("rows"))
        if not isinstance(rows, list):
          raise ValueError(f"{path}: a JSON object must hold a list under "
                           "'data' or 'rows'; or give a JSON list of objects")
  if not rows:
    raise ValueError(f"data file {path} holds no rows")
  return rows


def _column(rows, name, path, role):
  """Values of column `name` as strings; errors name the file and row."""
  if not isinstance(rows[0], dict):
    raise ValueError(f"{path}: rows must be objects with named columns, got "
                     f"{type(rows[0]).__name__}")
  if name not in rows[0]:
    raise ValueError(f"{role} column {name!r} not in {path}; available "
                     f"columns: {list(rows[0].keys())}")
  out = []
  for n, r in enumerate(rows):
    value = r.get(name) if isinstance(r, dict) else None
    if value is None:
      raise ValueError(f"{path}: row {n} has no value for {role} column "
                       f"{name!r}")
    out.append(str(value))
  return out


def _sorted_labels(labels) -> list[str]:
  """Sorted label strings; numerically when every label is an integer."""
  labels = set(labels)
  try:
    return sorted(labels, key=int)
  except ValueError:
    return sorted(labels)


def load_text_classification(
    paths: str | Mapping[str, str], *, text_column: str, label_column: str,
    format: str | None = None, split_column: str | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
    label_map_path: str | None = None, allow_unseen_labels: bool = False,
) -> TextClassificationData:
  """Reads text + label columns into train/val/test splits.

  Args:
    paths: one file, or {"train": path, "val": path, "test": path}.
    text_column, label_column: column (key) names.
    format: csv | jsonl | json; inferred from the suffix when None.
    split_column: with one file, a column holding train/val/test per row;
      without it, one file is split randomly by `split_fractions` and `seed`.
    label_map_path: where to save the label -> id mapping (JSON).
    allow_unseen_labels: labels that occur only in val/test are an error
      unless True; then they get ids after the training labels (a model
      trained on train can never predict them).

  Labels are read as strings. Ids: the training labels in sorted order
  (numeric order when all are integers) get 0..K-1; with
  allow_unseen_labels, labels seen only in val/test get ids K, K+1, ... in
  sorted order (listed in `label_names` after the training labels).

  Raises:
    FileNotFoundError: a path does not exist (the message names it).
    ValueError: a column is missing (the message lists the available
      columns), a file holds no rows (names the file), labels occur only in
      val/test and allow_unseen_labels is False (names them), or a split
      value is not train/val/test.
  """
  if format is not None and format not in FORMATS:
    raise ValueError(f"format={format!r}; valid: {FORMATS} or None (infer "
                     "from the file suffix)")
  if isinstance(paths, os.PathLike):
    paths = os.fspath(paths)
  if isinstance(paths, str):
    fmt = format or _infer_format(paths)
    rows = _read_rows(paths, fmt)
    texts = _column(rows, text_column, paths, "text")
    labels = _column(rows, label_column, paths, "label")
    if split_column:
      split = _column(rows, split_column, paths, "split")
      split = [{"validation": "val", "dev": "val"}.get(s, s) for s in split]
      bad = sorted(set(split) - {"train", "val", "test"})
      if bad:
        raise ValueError(f"split column {split_column!r} has values {bad}; "
                         "valid: train, val (validation, dev), test")
    else:
      n = len(rows)
      perm = np.random.default_rng(seed).permutation(n)
      a = int(round(split_fractions[0] * n))
      b = a + int(round(split_fractions[1] * n))
      split = [""] * n
      for i, j in enumerate(perm):
        split[j] = "train" if i < a else ("val" if i < b else "test")
    parts = {s: ([t for t, x in zip(texts, split) if x == s],
                 [l for l, x in zip(labels, split) if x == s])
             for s in ("train", "val", "test")}
    source = f"user data from {paths}"
  else:
    alias = {"validation": "val", "dev": "val"}
    paths = {alias.get(k, k): v for k, v in paths.items()}
    unknown = sorted(set(paths) - {"train", "val", "test"})
    if unknown or "train" not in paths:
      raise ValueError(f"paths keys must include 'train' and be among "
                       f"train/val/test; got {sorted(paths)}")
    parts = {}
    for s in ("train", "val", "test"):
      if s not in paths:
        parts[s] = ([], [])
        continue
      p = os.fspath(paths[s])
      rows = _read_rows(p, format or _infer_format(p))
      parts[s] = (_column(rows, text_column, p, "text"),
                  _column(rows, label_column, p, "label"))
    source = f"user data from {dict(paths)}"
  if not parts["train"][0]:
    raise ValueError("the training split is empty")
  names = _sorted_labels(parts["train"][1])
  unseen = _sorted_labels(set(parts["val"][1] + parts["test"][1])
                          - set(names))
  if unseen and not allow_unseen_labels:
    raise ValueError(f"labels {unseen[:20]} occur in val/test but never in "
                     "train; fix the data or pass allow_unseen_labels=True "
                     "(they then get ids after the training labels)")
  names += unseen
  index = {n: i for i, n in enumerate(names)}
  if label_map_path:
    with open(label_map_path, "w") as f:
      json.dump(index, f, indent=1, ensure_ascii=False)
  splits = {s: Split(t, np.array([index[x] for x in l], np.int32))
            for s, (t, l) in parts.items()}
  return TextClassificationData(
      train=splits["train"], val=splits["val"], test=splits["test"],
      label_names=names, oos_label=None, source=source)
