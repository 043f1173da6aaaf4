"""Counterfactual distillation: teacher -> student with gender-swapped data
(CDA) and teacher prediction perturbation (Gupta et al. 2022).

`trustjax.distill.job` holds the end-to-end job run by `launch/distill.py`
(imported on demand: it pulls in data, models and experiment)."""

from trustjax.distill.losses import distillation_loss
from trustjax.distill.losses import kd_token_kl
from trustjax.distill.losses import next_token_weight
from trustjax.distill.perturbation import METHODS
from trustjax.distill.perturbation import combine_logprobs
from trustjax.distill.perturbation import counterfactual_ids
from trustjax.distill.perturbation import gendered_context
from trustjax.distill.perturbation import perturbed_teacher_logprobs
