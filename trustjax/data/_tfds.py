"""Preparing and reading TFDS builders without TensorFlow.

Builders write ArrayRecord files and are read with `as_data_source()`; no
TensorFlow is needed. Preparation is guarded by a file lock so parallel
processes (pytest-xdist, sweeps) can share one cache directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


def default_cache_dir() -> str:
  return os.environ.get("TRUSTJAX_TFDS_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "trustjax", "tfds")


@contextlib.contextmanager
def _lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(builder_cls, *, cache_dir: str | None, manual_dir: str | None,
            **builder_kwargs):
  """Instantiates, prepares (once) and returns the builder."""
  import tensorflow_datasets as tfds
  cache_dir = cache_dir or default_cache_dir()
  builder = builder_cls(data_dir=cache_dir, file_format="array_record",
                        **builder_kwargs)
  with _lock(os.path.join(cache_dir, f".{builder.name}.lock")):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def manual_file(dl_manager, fname: str) -> str | None:
  """`manual_dir/fname` when a manual dir was given and holds it."""
  try:
    root = dl_manager.manual_dir
  except (AssertionError, ValueError, FileNotFoundError):
    return None
  path = os.path.join(root, fname) if root else None
  return path if path and os.path.exists(path) else None
