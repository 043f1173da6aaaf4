"""Tests for trustjax.privacy.accounting and trustjax.privacy.mechanism.

References are dp_accounting accountants fed events built here by hand.
"""

import math

import dp_accounting
from dp_accounting import dp_event as dpe
import pytest

from trustjax.privacy import accounting
from trustjax.privacy.mechanism import GaussianMechanism
from trustjax.privacy.mechanism import effective_noise_multiplier


def _pld_eps(event, delta, vdi=1e-4):
  acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=vdi)
  acc.compose(event)
  return acc.get_epsilon(delta)


def _rdp_eps(event, delta):
  acc = dp_accounting.rdp.RdpAccountant()
  acc.compose(event)
  return acc.get_epsilon(delta)


def test_epsilon_matches_dp_accounting_pld_and_rdp():
  sigma, q, steps, delta = 1.1, 0.01, 300, 1e-5
  ref_event = dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(sigma)), steps)
  assert accounting.epsilon(sigma, q, steps, delta) == pytest.approx(
      _pld_eps(ref_event, delta), rel=1e-9, abs=1e-9)
  assert accounting.epsilon(sigma, q, steps, delta,
                            accountant="rdp") == pytest.approx(
                                _rdp_eps(ref_event, delta), rel=1e-9)
  # Sanity: PLD is tighter than RDP.
  assert accounting.epsilon(sigma, q, steps, delta) < accounting.epsilon(
      sigma, q, steps, delta, accountant="rdp")


def test_decaying_noise_schedule_composes():
  segs = accounting.noise_decay_schedule(1.5, 0.8, steps_per_epoch=50,
                                         epochs=3, sampling_rate=0.02)
  assert [s.noise_multiplier for s in segs] == pytest.approx(
      [1.5, 1.2, 0.96])
  assert accounting.noise_multiplier_at(segs, 0) == 1.5
  assert accounting.noise_multiplier_at(segs, 99) == pytest.approx(1.2)
  assert accounting.noise_multiplier_at(segs, 100) == pytest.approx(0.96)
  ref = dpe.ComposedDpEvent([
      dpe.SelfComposedDpEvent(
          dpe.PoissonSampledDpEvent(0.02, dpe.GaussianDpEvent(s)), 50)
      for s in (1.5, 1.5 * 0.8, 1.5 * 0.8**2)])
  ev = accounting.schedule_event(segs)
  eps = accounting.epsilon_from_event(ev, 1e-5,
                                      value_discretization_interval=1e-3)
  assert eps == pytest.approx(_pld_eps(ref, 1e-5, vdi=1e-3), rel=1e-9)
  assert accounting.epsilon_from_event(
      ev, 1e-5, accountant="rdp") == pytest.approx(_rdp_eps(ref, 1e-5),
                                                   rel=1e-9)
  # Changing sampling rates too.
  ev2 = accounting.schedule_event([(1.0, 0.01, 40), (2.0, 0.05, 30)])
  ref2 = dpe.ComposedDpEvent([
      dpe.SelfComposedDpEvent(
          dpe.PoissonSampledDpEvent(0.01, dpe.GaussianDpEvent(1.0)), 40),
      dpe.SelfComposedDpEvent(
          dpe.PoissonSampledDpEvent(0.05, dpe.GaussianDpEvent(2.0)), 30)])
  assert accounting.epsilon_from_event(
      ev2, 1e-5, value_discretization_interval=1e-3) == pytest.approx(
          _pld_eps(ref2, 1e-5, vdi=1e-3), rel=1e-9)


def test_calibrate_noise_within_one_percent_pld_and_rdp():
  for acc in ("pld", "rdp"):
    sigma = accounting.calibrate_noise(1.0, 1e-5, 0.02, 100, accountant=acc)
    ev = dpe.SelfComposedDpEvent(
        dpe.PoissonSampledDpEvent(0.02, dpe.GaussianDpEvent(sigma)), 100)
    eps = _pld_eps(ev, 1e-5) if acc == "pld" else _rdp_eps(ev, 1e-5)
    assert 0.99 <= eps <= 1.0, (acc, sigma, eps)


def test_rdp_with_truncation_pays_delta():
  n, q, b = 1000, 0.05, 110
  ev = accounting.dp_sgd_event(1.0, q, 50, truncated_batch_size=b,
                               num_examples=n)
  eps = accounting.epsilon_from_event(ev, 1e-5, accountant="rdp")
  untrunc = dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(1.0)), 50)
  from scipy import stats
  tv = 50 * stats.binom.sf(b, n + 1, q)
  # Valid: the untruncated RDP epsilon at the reduced delta is <= eps.
  assert _rdp_eps(untrunc, 1e-5 - (1 + math.exp(eps)) * tv) <= eps
  assert eps >= _rdp_eps(untrunc, 1e-5)
  # Heavy truncation: the RDP bound proves nothing (inf, conservative);
  # PLD accounts the truncated event exactly.
  heavy = accounting.dp_sgd_event(1.0, q, 50, truncated_batch_size=50,
                                  num_examples=n)
  assert accounting.epsilon_from_event(heavy, 1e-5, accountant="rdp") == \
      math.inf
  assert math.isfinite(accounting.epsilon_from_event(heavy, 1e-5))


def test_calibrate_steps_and_max_composed_steps_brute_force():
  step = dpe.PoissonSampledDpEvent(0.05, dpe.GaussianDpEvent(1.0))
  m = accounting.max_composed_steps(step, 2.0, 1e-5, accountant="rdp")
  assert m > 3
  # Brute force: the first count whose epsilon exceeds the target, minus 1.
  k = 1
  while _rdp_eps(dpe.SelfComposedDpEvent(step, k), 1e-5) <= 2.0:
    k += 1
  assert m == k - 1
  assert accounting.calibrate_steps(2.0, 1e-5, 1.0, 0.05,
                                    accountant="rdp") == m


def test_default_delta_and_check():
  assert accounting.default_delta(1000) == pytest.approx(1000**-1.1)
  assert accounting.check_delta(1e-4, 1000) == 1e-4
  with pytest.raises(ValueError, match=r"delta=0.001.*1/num_examples"):
    accounting.check_delta(1e-3, 1000)
  with pytest.raises(ValueError, match="delta"):
    accounting.epsilon(1.0, 0.01, 10, 0.01, num_examples=1000)


@pytest.mark.parametrize("call,match", [
    (lambda: accounting.calibrate_noise(0.0, 1e-5, 0.01, 10), "target_epsilon"),
    (lambda: accounting.calibrate_noise(-1.0, 1e-5, 0.01, 10),
     "target_epsilon"),
    (lambda: accounting.calibrate_noise(1.0, 1.0, 0.01, 10), "delta"),
    (lambda: accounting.calibrate_noise(1.0, 0.0, 0.01, 10), "delta"),
    (lambda: accounting.calibrate_noise(1e-3, 1e-5, 1.0, 1000,
                                        accountant="rdp",
                                        sigma_bounds=(0.5, 5.0)),
     "unreachable"),
    (lambda: accounting.epsilon(0.0, 0.01, 10, 1e-5), "noise_multiplier"),
    (lambda: accounting.epsilon(-1.0, 0.01, 10, 1e-5), "noise_multiplier"),
    (lambda: accounting.epsilon(1.0, 0.0, 10, 1e-5), "sampling_rate"),
    (lambda: accounting.epsilon(1.0, 0.01, 10, 1e-5, accountant="moments"),
     "accountant"),
    (lambda: accounting.dp_sgd_event(1.0, 0.1, 10, truncated_batch_size=5),
     "num_examples"),
])
def test_accounting_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ----------------------------------------------------------------- mechanism


def test_mechanism_noise_std_and_event_agree():
  m = GaussianMechanism(l2_clip=2.0, noise_multiplier=1.5,
                        expected_batch_size=50.0, sampling_rate=0.05,
                        num_examples=1000)
  assert m.noise_std == 3.0
  assert m.noise_std_of_mean == pytest.approx(3.0 / 50)
  assert m.dp_event(7) == dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(0.05, dpe.GaussianDpEvent(1.5)), 7)
  assert m.epsilon(7, 1e-5) == pytest.approx(_pld_eps(m.dp_event(7), 1e-5),
                                             rel=1e-12)


def test_mechanism_aux_queries_joint_noise():
  m = GaussianMechanism(1.0, 1.0, 10.0, 0.01, aux_noise_multipliers=(2.0,))
  z = (1.0 + 0.25) ** -0.5
  assert effective_noise_multiplier(1.0, (2.0,)) == pytest.approx(z)
  assert m.dp_event(3) == dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(0.01, dpe.GaussianDpEvent(z)), 3)
  extra = dpe.PoissonSampledDpEvent(0.01, dpe.GaussianDpEvent(5.0))
  m2 = GaussianMechanism(1.0, 1.0, 10.0, 0.01, extra_events_per_step=(extra,))
  assert m2.step_event() == dpe.ComposedDpEvent(
      [dpe.PoissonSampledDpEvent(0.01, dpe.GaussianDpEvent(1.0)), extra])


def test_mechanism_from_target_epsilon():
  m = GaussianMechanism.from_target_epsilon(
      l2_clip=1.0, target_epsilon=2.0, delta=1e-5, steps=50,
      sampling_rate=0.02, num_examples=5000, aux_noise_multipliers=(10.0,))
  ref = _pld_eps(dpe.SelfComposedDpEvent(
      dpe.PoissonSampledDpEvent(0.02, dpe.GaussianDpEvent(
          effective_noise_multiplier(m.noise_multiplier, (10.0,)))), 50), 1e-5)
  assert 0.99 * 2.0 <= ref <= 2.0
  assert m.expected_batch_size == pytest.approx(100.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(l2_clip=0.0), "l2_clip"),
    (dict(l2_clip=-1.0), "l2_clip"),
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=-0.5), "noise_multiplier"),
    (dict(expected_batch_size=0.0), "expected_batch_size"),
    (dict(sampling_rate=0.0), "sampling_rate"),
    (dict(sampling_rate=1.1), "sampling_rate"),
    (dict(expected_batch_size=2000.0, sampling_rate=1.0), "expected_batch"),
    (dict(expected_batch_size=20.0), "expected_batch_size"),
    (dict(aux_noise_multipliers=(0.0,)), "aux_noise_multipliers"),
])
def test_mechanism_validation(kwargs, match):
  base = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=10.0,
              sampling_rate=0.01, num_examples=1000)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    GaussianMechanism(**base)


def test_mechanism_from_sampler_shares_truncated_event():
  from trustjax.privacy.sampling import PoissonSampler, ShuffledBatchSampler
  s = PoissonSampler(1000, 0.02, max_batch_size=30, seed=0)
  m = GaussianMechanism.from_sampler(s, l2_clip=1.0, noise_multiplier=1.2)
  assert m.expected_batch_size == pytest.approx(20.0)
  assert m.dp_event(4) == s.dp_event(1.2, 4)
  assert m.dp_event(4) == dpe.SelfComposedDpEvent(
      dpe.TruncatedSubsampledGaussianDpEvent(1001, 0.02, 30, 1.2), 4)
  with pytest.raises(ValueError, match="Poisson"):
    GaussianMechanism.from_sampler(ShuffledBatchSampler(100, 10, seed=0),
                                   l2_clip=1.0, noise_multiplier=1.0)


def test_pld_negligible_truncation_uses_coupling_bound_and_stays_valid():
  """tv <= 1e-3 delta: PLD accounts the untruncated event plus (1+e^eps) tv
  of delta. The result must upper-bound the exact truncated PLD and the
  untruncated epsilon, and be close to both."""
  import dp_accounting
  from scipy import stats as sps
  from trustjax.privacy import accounting as acc
  n, q, sigma, steps, delta = 1000, 0.05, 1.0, 30, 1e-5
  b = int(sps.binom.isf(1e-12, n + 1, q)) + 1
  event = acc.dp_sgd_event(sigma, q, steps, truncated_batch_size=b,
                           num_examples=n)
  got = acc.epsilon_from_event(event, delta)
  plain = acc.epsilon(sigma, q, steps, delta)
  exact = dp_accounting.pld.PLDAccountant(
      value_discretization_interval=1e-4)
  exact.compose(event)
  assert got >= plain - 1e-12
  assert got >= exact.get_epsilon(delta) - 1e-3
  assert got <= plain * 1.001
