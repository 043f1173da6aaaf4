"""Practical privacy auditing: membership inference (threshold, LiRA), attack
metrics, empirical epsilon lower bounds, canaries and exposure, and
white-box canary extraction (model inversion).

All attacks take per-example scores or a model and return numpy results;
none of them trains models (shadow models come from `trustjax.sweeps`; the
audit job that trains them and runs every attack is
`trustjax.experiment.audit_job`). `report` pools attacks over K models
audited in turn and writes the markdown report.
"""

from trustjax.audit.canaries import Canary
from trustjax.audit.canaries import CanaryPattern
from trustjax.audit.canaries import CanaryTokens
from trustjax.audit.canaries import candidate_losses
from trustjax.audit.canaries import exposure
from trustjax.audit.canaries import exposure_skewnorm
from trustjax.audit.canaries import insert_canaries
from trustjax.audit.canaries import make_canaries
from trustjax.audit.canaries import secret_rank
from trustjax.audit.canaries import tokenize_canary
from trustjax.audit.epsilon import best_threshold
from trustjax.audit.epsilon import clopper_pearson
from trustjax.audit.epsilon import dp_max_auc
from trustjax.audit.epsilon import empirical_epsilon
from trustjax.audit.epsilon import empirical_epsilon_heldout
from trustjax.audit.epsilon import epsilon_lower_bound
from trustjax.audit.epsilon import EpsilonBound
from trustjax.audit.inversion import canary_loss_fn
from trustjax.audit.inversion import invert_canaries
from trustjax.audit.inversion import invert_canary
from trustjax.audit.inversion import InversionResult
from trustjax.audit.lira import leave_one_out
from trustjax.audit.lira import lira_offline
from trustjax.audit.lira import lira_online
from trustjax.audit.lira import shadow_in_masks
from trustjax.audit.membership import AttackInputData
from trustjax.audit.membership import confidence
from trustjax.audit.membership import logit_scaled_confidence
from trustjax.audit.membership import loss
from trustjax.audit.membership import SCORE_NAMES
from trustjax.audit.membership import score
from trustjax.audit.membership import threshold_attack
from trustjax.audit.metrics import AttackResult
from trustjax.audit.metrics import auc_rank
from trustjax.audit.metrics import check_scores
from trustjax.audit.metrics import evaluate_attack
from trustjax.audit.metrics import plot_roc
from trustjax.audit.metrics import roc_curve
from trustjax.audit.metrics import RocCurve
from trustjax.audit.report import empirical_epsilons
from trustjax.audit.report import membership_attacks
from trustjax.audit.report import summarise_canaries
from trustjax.audit.report import write_markdown
