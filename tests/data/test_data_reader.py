"""Generic text-classification reader: formats, splits, errors."""

import csv
import json

import numpy as np
import pytest

from trustjax.data import load_text_classification


def _write_csv(path, rows, header=("text", "label")):
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def test_csv_quoted_commas_unicode_and_split_files(tmp_path):
  train = _write_csv(tmp_path / "train.csv", [
      ("hello, world", "greet"), ("ça va? «oui», merci", "greet"),
      ('a "quoted" word, again', "other"), ("日本語のテキスト", "other")])
  val = _write_csv(tmp_path / "val.csv", [("bye, now", "other")])
  test = _write_csv(tmp_path / "test.csv", [("hi", "greet")])
  label_map = tmp_path / "labels.json"
  data = load_text_classification(
      {"train": train, "validation": val, "test": test},
      text_column="text", label_column="label",
      label_map_path=str(label_map))
  assert data.train.texts == ["hello, world", "ça va? «oui», merci",
                              'a "quoted" word, again', "日本語のテキスト"]
  assert data.label_names == ["greet", "other"]
  np.testing.assert_array_equal(data.train.labels, [0, 0, 1, 1])
  assert data.val.texts == ["bye, now"] and list(data.val.labels) == [1]
  assert list(data.test.labels) == [0]
  assert json.loads(label_map.read_text()) == {"greet": 0, "other": 1}
  assert data.oos_label is None and train in data.source


def test_jsonl_with_split_column_and_numeric_labels(tmp_path):
  path = tmp_path / "d.jsonl"
  rows = [{"t": f"text {i}", "y": i % 11, "s": s}
          for i, s in enumerate(["train"] * 22 + ["val"] * 3 + ["test"] * 2)]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
  data = load_text_classification(str(path), text_column="t",
                                  label_column="y", split_column="s")
  assert (len(data.train), len(data.val), len(data.test)) == (22, 3, 2)
  # Integer labels sort numerically, not as strings ("10" after "9").
  assert data.label_names == [str(i) for i in range(11)]
  assert [int(data.label_names[y]) for y in data.train.labels] == \
      [i % 11 for i in range(22)]


def test_json_list_random_split_is_deterministic(tmp_path):
  path = tmp_path / "d.json"
  rows = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(50)]
  path.write_text(json.dumps(rows))
  a = load_text_classification(str(path), text_column="text",
                               label_column="label", seed=3)
  b = load_text_classification(str(path), text_column="text",
                               label_column="label", seed=3)
  assert (len(a.train), len(a.val), len(a.test)) == (40, 5, 5)
  assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
  every = sorted(a.train.texts + a.val.texts + a.test.texts)
  assert every == sorted(r["text"] for r in rows)


def test_format_argument_overrides_suffix(tmp_path):
  path = tmp_path / "data.txt"
  path.write_text('{"text": "x", "label": "a"}\n')
  data = load_text_classification(str(path), text_column="text",
                                  label_column="label", format="jsonl",
                                  split_fractions=(1.0, 0.0, 0.0))
  assert data.train.texts == ["x"]
  with pytest.raises(ValueError, match="format"):
    load_text_classification(str(path), text_column="text",
                             label_column="label")
  with pytest.raises(ValueError, match="format='xml'"):
    load_text_classification(str(path), text_column="text",
                             label_column="label", format="xml")


def test_unknown_column_lists_available(tmp_path):
  path = _write_csv(tmp_path / "d.csv", [("a", "x")],
                    header=("sentence", "intent"))
  with pytest.raises(ValueError) as e:
    load_text_classification(path, text_column="text", label_column="intent")
  assert "'text'" in str(e.value)
  assert "sentence" in str(e.value) and "intent" in str(e.value)


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_empty_file_names_it(tmp_path, content):
  path = tmp_path / "empty.csv"
  path.write_text(content)
  with pytest.raises(ValueError, match="empty.csv"):
    load_text_classification(str(path), text_column="text",
                             label_column="label")


def test_missing_file_names_path(tmp_path):
  path = str(tmp_path / "absent.csv")
  with pytest.raises(FileNotFoundError, match="absent.csv"):
    load_text_classification(path, text_column="text", label_column="label")
  train = _write_csv(tmp_path / "train.csv", [("a", "x")])
  with pytest.raises(FileNotFoundError, match="absent.csv"):
    load_text_classification({"train": train, "test": path},
                             text_column="text", label_column="label")


def test_unseen_labels(tmp_path):
  train = _write_csv(tmp_path / "train.csv", [("a", "x"), ("b", "y")])
  val = _write_csv(tmp_path / "val.csv", [("c", "zeta"), ("d", "x")])
  test = _write_csv(tmp_path / "test.csv", [("e", "alpha")])
  paths = {"train": train, "val": val, "test": test}
  with pytest.raises(ValueError) as e:
    load_text_classification(paths, text_column="text", label_column="label")
  assert "alpha" in str(e.value) and "zeta" in str(e.value)
  assert "allow_unseen_labels" in str(e.value)
  data = load_text_classification(paths, text_column="text",
                                  label_column="label",
                                  allow_unseen_labels=True)
  # Documented: training labels first (sorted), then unseen ones (sorted).
  assert data.label_names == ["x", "y", "alpha", "zeta"]
  assert list(data.val.labels) == [3, 0] and list(data.test.labels) == [2]


def test_bad_split_values_and_missing_cells(tmp_path):
  path = _write_csv(tmp_path / "d.csv", [("a", "x", "train"),
                                         ("b", "x", "holdout")],
                    header=("text", "label", "split"))
  with pytest.raises(ValueError, match="holdout"):
    load_text_classification(path, text_column="text", label_column="label",
                             split_column="split")
  path = tmp_path / "m.jsonl"
  path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
  with pytest.raises(ValueError, match="row 1"):
    load_text_classification(str(path), text_column="text",
                             label_column="label")


def test_hand_written_csv_with_bom_and_quotes(tmp_path):
  path = tmp_path / "raw.csv"
  path.write_bytes('\ufefftext,label\n"a, b, c",x\n"say ""hi"", ok",y\n'
                   '"multi\nline, text",x\n'.encode("utf-8"))
  data = load_text_classification(str(path), text_column="text",
                                  label_column="label",
                                  split_fractions=(1.0, 0.0, 0.0))
  assert sorted(data.train.texts) == ["a, b, c", "multi\nline, text",
                                      'say "hi", ok']
  assert data.label_names == ["x", "y"]
