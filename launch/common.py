"""What the launch scripts share: run a job and print a clean error or summary."""

import sys

from absl import logging

from trustjax.experiment import classification


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
  title = "DP training finished" if expect_dp else "training finished"
  print(f"\n{title} ({workdir}):\n" + classification.format_summary(summary),
        flush=True)
  if expect_dp:
    print(f"\n=> test accuracy {summary.get('test_accuracy', float('nan')):.4f}"
          f" at epsilon {summary['epsilon']:.3f} (delta {summary['delta']:.2e})",
          flush=True)
  return summary
