#!/usr/bin/env bash
# Activity-based vs uniform client selection (Dupuy et al., ICASSP 2022) on
# the heavy-tailed CLINC150 partition, static and continual settings, over
# several training seeds (the partition stays fixed: fl.partition_seed=0;
# config.seed drives model init, client selection and local shuffles).
#   TRUSTJAX_DATA_DIR=../shared/data bash benchmarks/fl_selection.sh [ROUNDS] [SEEDS] [EVAL_EVERY]
# e.g. `bash benchmarks/fl_selection.sh 100 "0 1 2" 5`. Runs one simulation at
# a time; prints one JSON line per run (from its summary.json); workdirs under
# runs/fl_selection/<setting>_<selection>_s<seed>. A workdir whose
# summary.json exists is reused (delete it to rerun); a run that fails (e.g.
# diverges) prints an "error" line and the script goes on. Then
# benchmarks/fl_selection_plot.py writes the accuracy-vs-rounds plot and the
# table into benchmarks/results/.
set -euo pipefail
ROUNDS=${1:-100}
SEEDS=${2:-"0 1 2"}
EVAL_EVERY=${3:-5}
PY=${PY:-.venv/bin/python}
mkdir -p runs/fl_selection
for seed in $SEEDS; do
  for setting in static continual; do
    extra=()
    if [ "$setting" = continual ]; then
      extra=(--config.fl.continual_rounds=$ROUNDS --config.fl.cap=20 --config.fl.policy=fifo)
    fi
    for sel in uniform activity; do
      wd=runs/fl_selection/${setting}_${sel}_s${seed}
      if [ ! -f "$wd/summary.json" ]; then
        $PY -m launch.simulate_fl --config=configs/fl_clinc150.py --workdir=$wd --overwrite \
          --config.seed=$seed --config.fl.rounds=$ROUNDS --config.fl.eval_every=$EVAL_EVERY \
          --config.fl.selection=$sel --config.fl.row_sparse=true "${extra[@]}" > $wd.log 2>&1 || true
      fi
      if [ ! -f "$wd/summary.json" ]; then
        # A diverged run (FloatingPointError) or a crash: reported, not fatal;
        # fl_selection_plot.py lists it under the table.
        echo "{\"setting\": \"$setting\", \"selection\": \"$sel\", \"seed\": $seed, \"error\": \"$(tail -1 $wd.log | tr -d '"')\"}"
        continue
      fi
      $PY -c "import json,sys; s=json.load(open('$wd/summary.json')); print(json.dumps({'setting': '$setting', 'selection': '$sel', 'seed': $seed, **{k: s[k] for k in ('rounds','test_in_scope_accuracy','heldout_acc_mean','heldout_acc_p10','heldout_acc_p50','heldout_acc_p90','seconds_this_run')}}))"
    done
  done
done
