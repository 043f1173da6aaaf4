"""What the launch scripts share: run a job and print a clean error or summary."""

import sys

from absl import flags
from absl import logging

from trustjax.experiment import classification
from trustjax.experiment import multihost


class _DropRdpConvergence:
  """dp_accounting's RDP accountant warns for every order alpha whose series
  does not converge at small sigma, and then excludes that order (the bound
  stays valid). Hundreds of such lines per job hide real warnings."""

  def filter(self, record) -> bool:
    return "failed to converge" not in record.getMessage()


def quiet_logs() -> None:
  """Keep orbax's per-save INFO lines and dp_accounting's per-order RDP
  convergence warnings out of the job's output."""
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_DropRdpConvergence())


_MULTIHOST_FLAGS = {}


def define_multihost_flags() -> None:
  """Defines --coordinator_address/--num_processes/--process_id/--multihost
  for a launch script whose job runs on many hosts; call at import time,
  then `init_distributed()` first thing in `main` (see
  trustjax/experiment/multihost.py for what to run on a cluster)."""
  if _MULTIHOST_FLAGS:
    return
  _MULTIHOST_FLAGS.update(
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "host:port of process 0 of a "
          "multi-host job (or JAX_COORDINATOR_ADDRESS)."),
      num_processes=flags.DEFINE_integer(
          "num_processes", None, "Processes in the multi-host job (or "
          "JAX_NUM_PROCESSES)."),
      process_id=flags.DEFINE_integer(
          "process_id", None, "This process's id in [0, num_processes) (or "
          "JAX_PROCESS_ID)."),
      auto=flags.DEFINE_bool(
          "multihost", False, "Join a multi-host job whose coordinator, size "
          "and process id JAX detects (SLURM, Open MPI, Cloud TPU)."))


def init_distributed() -> bool:
  """Joins the multi-host job named by the flags (if defined) or the JAX_*
  variables; a no-op returning False for a single-process run. Call before
  any JAX computation. Bad settings exit with one clear message."""
  values = {k: v.value for k, v in _MULTIHOST_FLAGS.items()}
  try:
    return multihost.initialize(**values)
  except ValueError as e:
    sys.exit(f"error: {e}")


def run_classification(config, workdir: str, overwrite: bool,
                       expect_dp: bool) -> dict:
  """Runs the classification job; bad input exits with one clear message."""
  if bool(config.dp.enabled) != expect_dp:
    script = "train_dp" if config.dp.enabled else "train"
    sys.exit(f"error: this config has dp.enabled={config.dp.enabled}; run it "
             f"with `python -m launch.{script}`")
  quiet_logs()
  try:
    summary = classification.run(config, workdir, overwrite=overwrite)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  if not multihost.is_main_process():
    return summary
  title = "DP training finished" if expect_dp else "training finished"
  print(f"\n{title} ({workdir}):\n" + classification.format_summary(summary),
        flush=True)
  if expect_dp:
    print(f"\n=> test accuracy {summary.get('test_accuracy', float('nan')):.4f}"
          f" at epsilon {summary['epsilon']:.3f} (delta {summary['delta']:.2e})",
          flush=True)
  return summary
