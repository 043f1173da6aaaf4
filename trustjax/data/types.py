"""Containers shared by the data loaders."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
  """One split of a text-classification data set."""
  texts: list[str]
  labels: np.ndarray          # int32[N]

  def __post_init__(self):
    self.labels = np.asarray(self.labels, np.int32)
    if len(self.texts) != len(self.labels):
      raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} "
                       "labels")

  def __len__(self) -> int:
    return len(self.texts)


@dataclasses.dataclass
class TextClassificationData:
  """train/val/test splits, label names, and where the data came from.

  `oos_label` is the id of the out-of-scope class (CLINC150's `oos`), or None.
  `source` is a human-readable statement of which data was used.
  """
  train: Split
  val: Split
  test: Split
  label_names: list[str]
  oos_label: int | None
  source: str

  @property
  def num_classes(self) -> int:
    return len(self.label_names)
