"""Test configuration: 8 simulated CPU devices and strict numerics.

Must run before any JAX operation, which is why it lives in conftest.
"""
import os

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir_or_skip(*parts: str) -> str:
  """Returns a path under TRUSTJAX_DATA_DIR, or skips the test saying why."""
  root = os.environ.get("TRUSTJAX_DATA_DIR")
  if not root:
    pytest.skip("TRUSTJAX_DATA_DIR is not set: real-data test skipped "
                "(CI sets it to ../shared/data)")
  path = os.path.join(root, *parts)
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path}")
  return path


@pytest.fixture
def real_data_dir():
  return data_dir_or_skip()
