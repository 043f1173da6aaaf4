"""What every launch script shares: workdir, metrics, checkpoints, progress,
plots.

Exact resume (what a launch script must do for a bit-identical restart; see
`checkpoint.py`): `prepare_workdir` (same config or refuse), then
`Checkpointer.restore_latest(template)` of {params, opt_state, carried RNG
keys, other model state}; host state (step, sampler, accountant, privacy
parameters) goes in the JSON `extra`; derive per-step keys as
`fold_in(key(seed), step)`; open `MetricWriter(workdir, resume_step=step)`.

`trustjax.experiment.classification` holds the text-classification job
(imported on demand: it pulls in the data, model and privacy pillars)."""
# `trustjax.experiment.audit_job`: the privacy-audit job (shadow models through
# `classification.run_stacked`, every attack of `trustjax.audit`, the report);
# imported on demand like `classification`.

from trustjax.experiment.checkpoint import Checkpointer
from trustjax.experiment.checkpoint import CheckpointError
from trustjax.experiment.metrics import MetricWriter
from trustjax.experiment.metrics import read_metrics
from trustjax.experiment.plots import line_plot
from trustjax.experiment.plots import scatter_plot
from trustjax.experiment.progress import Progress
from trustjax.experiment.workdir import config_diff
from trustjax.experiment.workdir import config_hash
from trustjax.experiment.workdir import config_to_dict
from trustjax.experiment.workdir import load_config
from trustjax.experiment.workdir import prepare_workdir
