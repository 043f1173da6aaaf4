"""Hyperparameter sweeps: K models stacked in one jitted program, and the
grid/random launcher with its results table and Pareto report."""

from trustjax.sweeps.stacked import gather_models
from trustjax.sweeps.stacked import model_mesh
from trustjax.sweeps.stacked import num_models
from trustjax.sweeps.stacked import shard_models
from trustjax.sweeps.stacked import stack
from trustjax.sweeps.stacked import stacked_step
from trustjax.sweeps.stacked import unstack
from trustjax.sweeps.stacked import vmap_train
from trustjax.sweeps.grid import SweepPoint
from trustjax.sweeps.grid import expand_grid
from trustjax.sweeps.grid import expand_space
from trustjax.sweeps.grid import flatten_space
from trustjax.sweeps.grid import point_id
from trustjax.sweeps.grid import sample_random
from trustjax.sweeps.report import best_per_bucket
from trustjax.sweeps.report import pareto_frontier
from trustjax.sweeps.report import plot_pareto
from trustjax.sweeps.report import result_row
from trustjax.sweeps.report import write_report
from trustjax.sweeps.report import write_results
from trustjax.sweeps.runner import PlannedPoint
from trustjax.sweeps.runner import PointResult
from trustjax.sweeps.runner import SweepPlan
from trustjax.sweeps.runner import plan_sweep
from trustjax.sweeps.runner import point_command
from trustjax.sweeps.runner import run_sweep
from trustjax.sweeps.runner import write_commands
from trustjax.sweeps.runner import write_sweep_report
