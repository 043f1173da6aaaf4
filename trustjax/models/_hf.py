"""Pieces shared by the Hugging Face-compatible models (GPT-2, BERT).

Checkpoint files (`config.json` + `model.safetensors`), module-path access to
an NNX model's variables, and the layers whose initialisation and numerics
match the PyTorch originals.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flax import nnx

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def variable(model: nnx.Module, path: tuple, var: str) -> nnx.Variable:
  """The variable `var` of the submodule at `path` (names and list indices)."""
  obj = model
  for p in path:
    obj = obj[p] if isinstance(p, int) else getattr(obj, p)
  return getattr(obj, var)


def read_json_config(path: str, what: str) -> dict[str, Any]:
  """`path`'s JSON object; FileNotFoundError / ValueError name the file."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{what} config file not found: {path}") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def write_hf_checkpoint(directory: str, tensors: dict[str, np.ndarray],
                        config: dict[str, Any]) -> None:
  """Writes `tensors` as `model.safetensors` (format "pt", so transformers
  reads it) and `config` as `config.json` under `directory` (created)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})
  with open(os.path.join(directory, CONFIG_NAME), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
    f.write("\n")


def normal_linear(n_in: int, n_out: int, std: float,
                  rngs: nnx.Rngs) -> nnx.Linear:
  """`nnx.Linear` initialised as HF initialises it: N(0, std^2), zero bias."""
  return nnx.Linear(n_in, n_out, kernel_init=nnx.initializers.normal(std),
                    bias_init=nnx.initializers.zeros, rngs=rngs)


def torch_layer_norm(dim: int, epsilon: float,
                     rngs: nnx.Rngs) -> nnx.LayerNorm:
  # use_fast_variance=False: E[(x-mean)^2] as torch computes it, not
  # E[x^2]-mean^2 (which loses digits when |mean| >> std).
  return nnx.LayerNorm(dim, epsilon=epsilon, use_fast_variance=False,
                       rngs=rngs)
