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
