#!/usr/bin/env bash
# Runs the stage benchmarks (III, IV, V, VIII), each measuring this project
# and a peer in the same run, and prints one table of all their figures.
#
#   III  create_pretraining_data.py vs Google's original script
#   IV   produce_teacher_labels.py vs Hugging Face BertForMaskedLM (PyTorch),
#        and as an mpirun -np 2 job vs one process on the same cores
#   V    distillation training step vs Hugging Face BertForPreTraining, and
#        the same with an online teacher and hidden + attention losses
#   VIII run_classifier.py's training step (BERT-Base size, seq 128) vs
#        Hugging Face BertForSequenceClassification
#
# and then checks that Hugging Face `transformers` loads the folders of
# export_bert_checkpoint.py and computes our outputs (bench/check_export.py:
# the largest difference is printed).
#
# The peers of IV, V and VIII need PyTorch and transformers; they are benchmark
# tools, not project dependencies, so they are installed here (CPU wheels)
# when missing. Full logs go to bench_output/ (or $BENCH_OUTPUT).
# Usage: make bench    (about 35 minutes on 2 cores: stages IV and V run
# both sides in float32 and bfloat16)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${BENCH_OUTPUT:-bench_output}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if ! "$PY" -c "import torch, transformers" >/dev/null 2>&1; then
  echo "bench: installing the peers' packages (torch CPU, transformers)"
  # torch pinned to a CPU build (an unpinned torch pulls a multi-GB CUDA one).
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q "transformers>=4.40,<6" torch==2.13.0
fi

mkdir -p "$OUT"
: > "$OUT/results.jsonl"
status=0
# Each entry: log name, script, its flags. The layer-loss row runs an online
# BERT-Base-sized teacher in every step, so it takes a smaller batch.
while read -r name bench args; do
  echo "=== bench/$bench.py $args"
  # shellcheck disable=SC2086  # $args holds several flags
  if "$PY" "bench/$bench.py" $args < /dev/null > "$OUT/$name.log" 2>&1; then
    grep -v '^BENCH_RESULT ' "$OUT/$name.log" | tail -4
  else
    tail -20 "$OUT/$name.log"
    echo "bench: bench/$bench.py failed (log: $OUT/$name.log)" >&2
    status=1
  fi
  sed -n 's/^BENCH_RESULT //p' "$OUT/$name.log" >> "$OUT/results.jsonl"
done <<'EOF'
bench_pretraining_data bench_pretraining_data
bench_teacher_labels bench_teacher_labels
bench_teacher_label_job bench_teacher_label_job
bench_distillation bench_distillation
bench_layer_distillation bench_distillation --layer_losses --dtypes float32 --batch_size 8 --steps 2
bench_finetuning bench_finetuning
EOF

echo
echo "Hardware: $("$PY" -c 'from bench import common; print(common.describe_hardware())' 2>/dev/null)"
"$PY" - "$OUT/results.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
head = ("stage", "metric", "ours", "peer (same run)", "ratio")
table = [head] + [
    (r["stage"], r["metric"], "%.1f" % r["ours"],
     "%.1f  %s" % (r["peer"], r["peer_name"]), "%.2fx" % r["ratio"])
    for r in rows]
widths = [max(len(row[i]) for row in table) for i in range(len(head))]
for n, row in enumerate(table):
  print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
  if n == 0:
    print("  ".join("-" * w for w in widths))
for r in rows:
  if r.get("note"):
    print("note (%s, %s): %s" % (r["stage"], r["peer_name"], r["note"]))
PYEOF

echo
echo "=== bench/check_export.py"
if "$PY" bench/check_export.py > "$OUT/check_export.log" 2>&1; then
  grep '^export' "$OUT/check_export.log"
else
  tail -20 "$OUT/check_export.log"
  echo "bench: bench/check_export.py failed (log: $OUT/check_export.log)" >&2
  status=1
fi
exit $status
