"""Checkpointer: round trip, latest step, retention, corruption, mismatch."""
import gc
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trustjax.experiment import CheckpointError
from trustjax.experiment import Checkpointer

# orbax leaves an un-awaited coroutine behind when a restore fails; it may be
# collected during any later test of this file.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine:RuntimeWarning"),
]


def _state(seed=0, width=4):
  k = jax.random.key(seed)
  params = {
      "w": jax.random.normal(k, (3, width), jnp.float32),
      "b": jnp.arange(width, dtype=jnp.bfloat16) / 3,
      "count": jnp.arange(width, dtype=jnp.int32) + seed,
  }
  opt = optax.adam(1e-2)
  opt_state = opt.init(params)
  # One real update so mu/nu/count are non-trivial.
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * (seed + 1), params)
  grads["count"] = jnp.zeros_like(params["count"])
  _, opt_state = opt.update(grads, opt_state, params)
  return {"params": params, "opt_state": opt_state,
          "key": jax.random.fold_in(k, 7),
          "raw_key": jax.random.key_data(jax.random.key(seed + 1)),
          "host": np.arange(3, dtype=np.int64) * (seed + 1)}


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert type(x) is type(y) or (isinstance(x, jax.Array) and
                                  isinstance(y, jax.Array))
    assert x.dtype == y.dtype and x.shape == y.shape
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_pytree_and_extra(tmp_path):
  state = _state(seed=3)
  extra = {"step": 10, "sampler": {"seed": 3, "epoch": np.int64(2)},
           "history": [(1.0, 5), (0.5, 5)], "noise_multiplier": 1.1}
  ckpt = Checkpointer(str(tmp_path), every_steps=5)
  assert ckpt.restore_latest(_state()) is None
  assert ckpt.maybe_save(10, state, extra)
  ckpt.close()
  # A fresh process would rebuild the template from the config (other
  # values, same structure) and restore into it.
  ckpt = Checkpointer(str(tmp_path), every_steps=5)
  step, restored, got_extra = ckpt.restore_latest(_state(seed=0))
  ckpt.close()
  assert step == 10
  _assert_tree_equal(restored, state)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert isinstance(restored["host"], np.ndarray)
  assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
  # The restored typed key generates the same numbers as the saved one.
  np.testing.assert_array_equal(jax.random.uniform(restored["key"], (4,)),
                                jax.random.uniform(state["key"], (4,)))
  assert got_extra == {"step": 10, "sampler": {"seed": 3, "epoch": 2},
                       "history": [[1.0, 5], [0.5, 5]],
                       "noise_multiplier": 1.1}


def test_every_steps_latest_and_max_to_keep(tmp_path):
  ckpt = Checkpointer(str(tmp_path), every_steps=3, max_to_keep=2)
  saved = [s for s in range(1, 11) if ckpt.maybe_save(s, _state(seed=s),
                                                      {"step": s})]
  assert saved == [3, 6, 9]
  assert ckpt.maybe_save(10, _state(seed=10), {"step": 10}, force=True)
  assert not ckpt.maybe_save(10, _state(seed=10), {"step": 10}, force=True)
  assert ckpt.all_steps() == [9, 10]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "9"]
  step, restored, extra = ckpt.restore_latest(_state())
  assert step == 10 and extra == {"step": 10}
  _assert_tree_equal(restored, _state(seed=10))
  ckpt.close()


def _snapshot(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      out[p] = open(p, "rb").read()
  return out


@pytest.mark.parametrize("target", ["state/_METADATA", "state/manifest.ocdbt",
                                    "extra/metadata"])
def test_corrupt_checkpoint_is_a_clear_error_and_untouched(tmp_path, target):
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, _state(), {"step": 1})
    ckpt.maybe_save(2, _state(seed=2), {"step": 2})
  f = tmp_path / "checkpoints" / "2" / target
  data = f.read_bytes()
  f.write_bytes(data[:len(data) // 2] + b"garbage")
  before = _snapshot(tmp_path)
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    with pytest.raises(CheckpointError) as e:
      ckpt.restore_latest(_state())
  msg = str(e.value)
  assert os.path.join(str(tmp_path), "checkpoints", "2") in msg
  assert "--overwrite" in msg and "Delete that step directory" in msg
  assert _snapshot(tmp_path) == before
  gc.collect()  # finalise orbax's abandoned coroutines under this filter


def test_template_shape_mismatch_is_a_clear_error(tmp_path):
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, _state(width=4), {"step": 1})
  before = _snapshot(tmp_path)
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    with pytest.raises(CheckpointError) as e:
      ckpt.restore_latest(_state(width=5))
  msg = str(e.value)
  assert "does not match" in msg
  assert "params.w: checkpoint shape (3, 4), template shape (3, 5)" in msg
  assert _snapshot(tmp_path) == before
  gc.collect()


def test_template_structure_mismatch_is_a_clear_error(tmp_path):
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, {"a": jnp.ones(2)}, {})
    with pytest.raises(CheckpointError, match="b: not in the checkpoint"):
      ckpt.restore_latest({"a": jnp.ones(2), "b": jnp.ones(3)})
  gc.collect()


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="every_steps=0"):
    Checkpointer(str(tmp_path), every_steps=0)
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    with pytest.raises(ValueError, match=r"extra\.f has type"):
      ckpt.maybe_save(1, {"a": jnp.ones(2)}, {"f": object()})


def test_sharded_state_restores_with_template_sharding(tmp_path):
  mesh = jax.make_mesh((len(jax.devices()),), ("clients",))
  sharding = jax.sharding.NamedSharding(mesh, jax.P("clients"))
  n = 2 * len(jax.devices())
  x = jax.device_put(jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3),
                     sharding)
  with Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, {"x": x}, {})
    _, got, _ = ckpt.restore_latest({"x": jax.device_put(jnp.zeros((n, 3)),
                                                         sharding)})
  assert got["x"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(got["x"]), np.asarray(x))
