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


def run_local_processes(script: str, out_dir, *, num_processes: int = 2,
                        devices_per_process: int = 4,
                        timeout_s: float = 120) -> list:
  """Runs `python script out_dir` as a `num_processes`-process JAX job on
  this machine (trustjax.experiment.multihost.spawn_local); fails the test
  with every process's output if one fails, else returns each process's
  `out_dir/process{i}.npz` as a dict. Import inside the test function: the
  script itself must not import this conftest (it sets 8 devices)."""
  import sys

  import numpy as np

  from trustjax.experiment import multihost
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  results = multihost.spawn_local(
      [sys.executable, os.path.abspath(script), str(out_dir)],
      num_processes, devices_per_process=devices_per_process, env=env,
      timeout_s=timeout_s)
  assert all(r.returncode == 0 for r in results), multihost.format_results(
      results)
  return [dict(np.load(os.path.join(str(out_dir), f"process{i}.npz")))
          for i in range(num_processes)]
