"""Search spaces of sweeps: grid product, zip, random draws, point ids."""

import itertools
import math
import re

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from ml_collections import config_dict

from trustjax.sweeps import expand_grid
from trustjax.sweeps import expand_space
from trustjax.sweeps import flatten_space
from trustjax.sweeps import point_id
from trustjax.sweeps import sample_random


def test_grid_is_the_cartesian_product_and_zip_rows_go_together():
  grid = {"seed": [0, 1, 2], "optimizer.learning_rate": [0.1, 0.2]}
  zip_ = {"dp.l2_clip": [0.5, 1.0], "dp.target_epsilon": [1.0, 8.0]}
  points = expand_grid(grid, zip_)
  # Reference: nested loops.
  expected = []
  for lr in (0.1, 0.2):
    for seed in (0, 1, 2):
      for clip, eps in ((0.5, 1.0), (1.0, 8.0)):
        expected.append({"seed": seed, "optimizer.learning_rate": lr,
                         "dp.l2_clip": clip, "dp.target_epsilon": eps})
  key = lambda p: sorted(p.items())  # noqa: E731
  assert sorted(map(key, points)) == sorted(map(key, expected))
  assert len(points) == 12
  # Zip fields never mix: clip 0.5 always with epsilon 1.
  assert all((p["dp.l2_clip"], p["dp.target_epsilon"]) in ((0.5, 1.0),
                                                           (1.0, 8.0))
             for p in points)


def test_nested_config_dict_space_flattens_to_dotted_fields():
  space = config_dict.ConfigDict({
      "optimizer": {"learning_rate": (0.1, 0.2)}, "seed": (0, 1),
      "dp": {"l2_clip": (1.0,)}})
  assert flatten_space(space) == {"dp.l2_clip": (1.0,),
                                  "optimizer.learning_rate": (0.1, 0.2),
                                  "seed": (0, 1)}
  points = expand_space(space)
  assert len(points) == 4
  assert {p.overrides["seed"] for p in points} == {0, 1}


@pytest.mark.parametrize("grid,zip_,match", [
    ({"seed": []}, None, "no values"),
    ({"seed": 3}, None, "list or tuple"),
    ({"seed": "abc"}, None, "list or tuple"),
    (None, {"a": [1, 2], "b": [1, 2, 3]}, "same length"),
    ({"a": [1]}, {"a": [2]}, "in both grid and zip"),
    ({"a": [1, 1]}, None, "same overrides"),
    ({"dp": {}}, None, "empty mapping"),
    (None, None, "sweep is empty"),
    ({}, {}, "sweep is empty"),
])
def test_bad_spaces_raise_clear_errors(grid, zip_, match):
  with pytest.raises(ValueError, match=match):
    expand_space(grid, zip_)


def test_random_draws_follow_their_distributions():
  dists = {"lr": ("loguniform", 1e-4, 1e-1), "c": ("uniform", 0.5, 2.0),
           "eps": ("choice", [1.0, 2.0, 8.0])}
  pts = sample_random(dists, 600, seed=3)
  lr = np.array([p["lr"] for p in pts])
  c = np.array([p["c"] for p in pts])
  assert lr.min() >= 1e-4 and lr.max() <= 1e-1
  # log(lr) uniform on [log 1e-4, log 1e-1]; c uniform on [0.5, 2].
  lo, hi = math.log(1e-4), math.log(1e-1)
  assert scipy.stats.kstest(np.log(lr), "uniform",
                            args=(lo, hi - lo)).pvalue > 1e-3
  assert scipy.stats.kstest(c, "uniform", args=(0.5, 1.5)).pvalue > 1e-3
  counts = {v: sum(p["eps"] == v for p in pts) for v in (1.0, 2.0, 8.0)}
  assert sum(counts.values()) == 600
  assert scipy.stats.chisquare(list(counts.values())).pvalue > 1e-3
  # Deterministic, and adding points keeps the first ones.
  assert sample_random(dists, 600, seed=3) == pts
  assert sample_random(dists, 10, seed=3) == pts[:10]
  assert sample_random(dists, 10, seed=4) != pts[:10]


@pytest.mark.parametrize("spec,match", [
    (("normal", 0, 1), "invalid"),
    (("uniform", 2.0, 1.0), "low <= high"),
    (("loguniform", 0.0, 1.0), "low > 0"),
    (("choice", []), "no values"),
    (("uniform", 1.0), "two bounds"),
])
def test_bad_distributions_raise(spec, match):
  with pytest.raises(ValueError, match=match):
    sample_random({"x": spec}, 3, seed=0)


def test_random_crossed_with_grid_and_repeated_choices_dropped():
  rand = {"num_points": 20, "seed": 0,
          "distributions": {"dp": {"l2_clip": ("choice", (0.5, 1.0))}}}
  pts = expand_space({"seed": (0, 1)}, None, rand)
  # 20 draws of a 2-value choice: only the 2 distinct values remain.
  assert len(pts) == 4
  assert {(p.overrides["seed"], p.overrides["dp.l2_clip"]) for p in pts} == \
      set(itertools.product((0, 1), (0.5, 1.0)))
  with pytest.raises(ValueError, match="num_points"):
    expand_space(None, None, {"num_points": 0, "distributions": {
        "x": ("uniform", 0, 1)}})
  with pytest.raises(ValueError, match="both random and in grid"):
    expand_space({"x": (1,)}, None, {"num_points": 2, "distributions": {
        "x": ("uniform", 0, 1)}})


def test_point_ids_are_stable_readable_and_distinct():
  a = point_id({"optimizer.learning_rate": 0.01, "seed": 1})
  b = point_id({"seed": 1, "optimizer.learning_rate": 0.01})
  assert a == b
  assert a.startswith("learning_rate=0.01,seed=1-")
  # Values equal at the shown precision still get different ids.
  assert point_id({"lr": 0.1}) != point_id({"lr": 0.1000001})
  assert point_id({"lr": 1}) != point_id({"lr": "1"})
  assert point_id({}) == "base"
  # Same ids on every expansion (a rerun finds its points).
  assert [p.point_id for p in expand_space({"seed": (0, 1)})] == \
      [p.point_id for p in expand_space({"seed": (0, 1)})]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
              st.booleans()), min_size=1, max_size=5))
def test_point_id_is_a_safe_file_name(overrides):
  pid = point_id(overrides)
  assert re.fullmatch(r"[A-Za-z0-9.,=+_-]+", pid), pid
  assert pid not in (".", "..") and len(pid) <= 64 + 9
