"""Differential privacy: per-example clipping, calibrated Gaussian noise,
Poisson sampling and accounting (over `dp_accounting`).

Adjacency throughout: add or remove one example. `noise_multiplier` (sigma)
is the noise std divided by the total l2 sensitivity C of the SUMMED clipped
gradient; the noisy sum is divided by the EXPECTED batch size.
"""

from trustjax.privacy.accounting import calibrate_event
from trustjax.privacy.accounting import calibrate_noise
from trustjax.privacy.accounting import calibrate_steps
from trustjax.privacy.accounting import check_delta
from trustjax.privacy.accounting import default_delta
from trustjax.privacy.accounting import dp_sgd_event
from trustjax.privacy.accounting import epsilon
from trustjax.privacy.accounting import epsilon_from_event
from trustjax.privacy.accounting import make_accountant
from trustjax.privacy.accounting import max_composed_steps
from trustjax.privacy.accounting import noise_decay_schedule
from trustjax.privacy.accounting import noise_multiplier_at
from trustjax.privacy.accounting import schedule_event
from trustjax.privacy.accounting import Segment
from trustjax.privacy.averaging import ema_decay_at
from trustjax.privacy.averaging import ema_update
from trustjax.privacy.budget import BudgetExceededError
from trustjax.privacy.budget import event_from_json
from trustjax.privacy.budget import event_to_json
from trustjax.privacy.budget import PrivacyBudget
from trustjax.privacy.budget import steps_within_budget
from trustjax.privacy.clipping import check_finite
from trustjax.privacy.clipping import ClipStats
from trustjax.privacy.clipping import clipped_grad
from trustjax.privacy.clipping import total_l2_sensitivity
from trustjax.privacy.dp_vocab import accountant_target
from trustjax.privacy.dp_vocab import composed_epsilon
from trustjax.privacy.dp_vocab import dp_vocabulary
from trustjax.privacy.dp_vocab import DpVocabulary
from trustjax.privacy.dp_vocab import gaussian_threshold
from trustjax.privacy.mechanism import effective_noise_multiplier
from trustjax.privacy.mechanism import GaussianMechanism
from trustjax.privacy.noise import add_gaussian_noise
from trustjax.privacy.noise import dpsgd
from trustjax.privacy.noise import gaussian_noise
from trustjax.privacy.noise import GaussianNoiseState
from trustjax.privacy.sampling import default_max_batch_size
from trustjax.privacy.sampling import PoissonSampler
from trustjax.privacy.sampling import ShuffledBatchSampler
from trustjax.privacy.adaptive import count_noise_multiplier
from trustjax.privacy.adaptive import gradient_noise_multiplier
from trustjax.privacy.adaptive import GaussianQuery
from trustjax.privacy.adaptive import private_layer_quantiles
from trustjax.privacy.adaptive import quantile_clip_update
from trustjax.privacy.distributed import make_dp_grad_fn
from trustjax.privacy.distributed import process_rows
from trustjax.privacy.distributed import shard_global
from trustjax.privacy.distributed import shard_process_local
from trustjax.privacy.distributed import to_host
from trustjax.privacy.tree import unflatten_clips
from trustjax.privacy.tree import uniform_per_layer_clip
