"""Tests for trustjax.privacy.budget.PrivacyBudget."""

import json

import dp_accounting
from dp_accounting import dp_event as dpe
import pytest

from trustjax.privacy import accounting
from trustjax.privacy.budget import BudgetExceededError
from trustjax.privacy.budget import PrivacyBudget
from trustjax.privacy.budget import event_from_json
from trustjax.privacy.budget import event_to_json

VDI = 1e-3  # coarse PLD grid keeps the brute force cheap


def _pld_eps(event, delta):
  acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=VDI)
  acc.compose(event)
  return acc.get_epsilon(delta)


def test_budget_stops_at_brute_force_step():
  step = dpe.PoissonSampledDpEvent(0.05, dpe.GaussianDpEvent(1.5))
  target, delta = 1.0, 1e-5
  budget = PrivacyBudget(target, delta, value_discretization_interval=VDI)
  steps = 0
  while budget.can_step(step):
    budget.spend(step)
    steps += 1
    assert steps < 1000
  assert steps > 20  # Brute force over step counts with dp_accounting directly.
  eps_at = [_pld_eps(dpe.SelfComposedDpEvent(step, k), delta)
            for k in range(1, steps + 2)]
  assert eps_at[steps - 1] <= target < eps_at[steps]
  assert max(eps_at[:steps]) <= target
  assert budget.epsilon == pytest.approx(eps_at[steps - 1], rel=1e-9)
  assert budget.steps == steps
  with pytest.raises(BudgetExceededError):
    budget.spend(step)
  assert budget.steps == steps  # nothing recorded


def test_budget_with_schedule_and_resume():
  fast = dpe.PoissonSampledDpEvent(0.1, dpe.GaussianDpEvent(2.0))
  slow = dpe.PoissonSampledDpEvent(0.1, dpe.GaussianDpEvent(1.0))
  budget = PrivacyBudget(2.0, 1e-5, value_discretization_interval=VDI)
  assert budget.epsilon == 0.0
  budget.spend(fast, 5)
  state = json.loads(json.dumps(budget.state_dict()))
  resumed = PrivacyBudget.from_state_dict(state)
  assert resumed.steps == 5 and resumed.epsilon == budget.epsilon
  n_slow = resumed.max_steps(slow)
  assert n_slow == budget.max_steps(slow) > 0
  ref = lambda k: _pld_eps(dpe.ComposedDpEvent(
      [dpe.SelfComposedDpEvent(fast, 5),
       dpe.SelfComposedDpEvent(slow, k)]), 1e-5)
  assert ref(n_slow) <= 2.0 < ref(n_slow + 1)
  for _ in range(n_slow):
    resumed.spend(slow)
  assert not resumed.can_step(slow)
  assert resumed.epsilon == pytest.approx(ref(n_slow), rel=1e-9)


def test_max_steps_matches_calibrate_steps():
  step = accounting.dp_sgd_event(1.0, 0.05, 1).event
  b = PrivacyBudget(1.0, 1e-5, accountant="rdp")
  assert b.max_steps(step) == accounting.calibrate_steps(
      1.0, 1e-5, 1.0, 0.05, accountant="rdp")


def test_event_json_roundtrip_and_rejects_unknown():
  ev = dpe.ComposedDpEvent([
      dpe.SelfComposedDpEvent(dpe.TruncatedSubsampledGaussianDpEvent(
          101, 0.1, 20, 1.0), 3),
      dpe.PoissonSampledDpEvent(0.1, dpe.GaussianDpEvent(2.0))])
  back = event_from_json(json.loads(json.dumps(event_to_json(ev))))
  assert back == ev
  with pytest.raises(ValueError, match="unknown DpEvent"):
    event_from_json({"__dp_event__": "os.system"})


@pytest.mark.parametrize("args,kwargs,match", [
    ((0.0, 1e-5), {}, "target_epsilon"),
    ((1.0, 1.0), {}, "delta"),
    ((1.0, 1e-2), dict(num_examples=1000), "1/num_examples"),
    ((1.0, 1e-5), dict(accountant="gdp"), "accountant"),
])
def test_budget_bad_inputs(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    PrivacyBudget(*args, **kwargs)
