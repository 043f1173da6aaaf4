#!/usr/bin/env bash
# Activity-based vs uniform client selection (Dupuy et al., ICASSP 2022) on
# the heavy-tailed CLINC150 partition, static and continual settings.
#   TRUSTJAX_DATA_DIR=../shared/data bash benchmarks/fl_selection.sh [ROUNDS]
# Prints one JSON line per run (from its summary.json); workdirs under
# runs/fl_selection/.
set -euo pipefail
ROUNDS=${1:-100}
PY=${PY:-.venv/bin/python}
for setting in static continual; do
  extra=()
  if [ "$setting" = continual ]; then
    extra=(--config.fl.continual_rounds=$ROUNDS --config.fl.cap=20 --config.fl.policy=fifo)
  fi
  for sel in uniform activity; do
    wd=runs/fl_selection/${setting}_${sel}
    $PY -m launch.simulate_fl --config=configs/fl_clinc150.py --workdir=$wd --overwrite \
      --config.fl.rounds=$ROUNDS --config.fl.selection=$sel "${extra[@]}" > $wd.log 2>&1 || { tail -5 $wd.log; exit 1; }
    $PY -c "import json,sys; s=json.load(open('$wd/summary.json')); print(json.dumps({'setting': '$setting', 'selection': '$sel', **{k: s[k] for k in ('rounds','test_in_scope_accuracy','heldout_acc_mean','heldout_acc_p10','heldout_acc_p50','heldout_acc_p90','seconds_this_run')}}))"
  done
done
