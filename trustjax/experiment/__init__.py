"""What every launch script shares: workdir, metrics, checkpoints, progress,
plots. `trustjax.experiment.classification` holds the text-classification job
(imported on demand: it pulls in the data, model and privacy pillars)."""

from trustjax.experiment.checkpoint import Checkpointer
from trustjax.experiment.checkpoint import CheckpointError
from trustjax.experiment.metrics import MetricWriter
from trustjax.experiment.metrics import read_metrics
from trustjax.experiment.plots import line_plot
from trustjax.experiment.progress import Progress
from trustjax.experiment.workdir import config_diff
from trustjax.experiment.workdir import config_hash
from trustjax.experiment.workdir import config_to_dict
from trustjax.experiment.workdir import prepare_workdir
