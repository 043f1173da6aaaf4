"""End to end: a killed-and-resumed loop equals an uninterrupted one.

The loop follows the exact-resume recipe of `trustjax.experiment`: params,
Adam state and a carried PRNG key in the orbax state; a host-side numpy
generator's state in the JSON extra; metrics truncated on resume.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from trustjax import experiment as tjx

_CONFIG = {"seed": 0, "steps": 9, "lr": 0.05, "checkpoint_every": 3}


def _loop(workdir, stop_after=None):
  tjx.prepare_workdir(workdir, _CONFIG)
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  opt = optax.adam(_CONFIG["lr"])
  state = {"params": params, "opt_state": opt.init(params),
           "key": jax.random.key(_CONFIG["seed"])}
  rng = np.random.default_rng(_CONFIG["seed"])  # carried host state
  ckpt = tjx.Checkpointer(workdir, every_steps=_CONFIG["checkpoint_every"])
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is not None:
    start, state, extra = restored
    rng.bit_generator.state = extra["rng"]
  writer = tjx.MetricWriter(workdir, resume_step=start if restored else None,
                            tensorboard=False)

  @jax.jit
  def step_fn(state, x):
    key, sub = jax.random.split(state["key"])
    noise = jax.random.normal(sub, (x.shape[0], 2))

    def loss(p):
      y = nnx.merge(graphdef, p)(x)
      return jnp.mean((y - noise) ** 2)
    val, g = jax.value_and_grad(loss)(state["params"])
    upd, opt_state = opt.update(g, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd),
            "opt_state": opt_state, "key": key}, val

  end = _CONFIG["steps"] if stop_after is None else stop_after
  for step in range(start, end):
    x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    state, loss = step_fn(state, x)
    writer.write(step + 1, {"loss": loss})
    ckpt.maybe_save(step + 1, state, {"rng": rng.bit_generator.state})
  writer.close()
  ckpt.close()
  return state


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  s_full = _loop(full)
  _loop(part, stop_after=8)  # dies after step 8; last checkpoint at 6
  with tjx.Checkpointer(part, every_steps=3) as ckpt:
    assert ckpt.latest_step() == 6
  s_part = _loop(part)
  for a, b in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_part)):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with open(os.path.join(full, "metrics.jsonl"), "rb") as f:
    want = f.read()
  with open(os.path.join(part, "metrics.jsonl"), "rb") as f:
    assert f.read() == want
  assert [json.loads(l)["step"] for l in want.splitlines()] == list(
      range(1, 10))
