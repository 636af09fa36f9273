#!/usr/bin/env bash
# Stage VII: distils the student across the GPUs of several nodes. mpirun
# starts network_distillation_distributed_truncated.py once per GPU on the
# nodes of a hosts file; Horovod averages the gradients (NCCL inside a node,
# hierarchical allreduce across nodes). With STAGE=labels it runs stage IV
# the same way: produce_teacher_labels.py --output_dir, the stage-III files
# dealt to the processes (one GPU each), a rerun resuming.
#
# Usage: multinode_train.sh TOTAL_GPUS [FLAG ...]
#   TOTAL_GPUS  processes to start, one per GPU: at most the sum of the slots
#               in the hosts file (slots fill the nodes in file order)
#   FLAG ...    more flags for network_distillation_distributed_truncated.py
#               (STAGE=labels: produce_teacher_labels.py);
#               they come last, so they override the settings below
#
# Settings, from environment variables [defaults]. Paths must be the same on
# every node; relative ones are taken from REPO_DIR (every process starts
# there; the script says so when it sees one).
#   HOSTS_FILE         nodes, "HOST slots=N" lines      [$REPO_DIR/hosts]
#   REPO_DIR           this repository                  [this script's folder]
#   PYTHON             python with TensorFlow + Horovod [$REPO_DIR/.venv/bin/python
#                                                        if present, else python3]
#   STAGE              distill, or labels (stage IV)    [distill]
#   INPUT_FILE (DATA)  stage-IV records, glob or comma list
#                                          [data/record_distill/*.tfrecord;
#                       STAGE=labels: stage-III records, data/record/*.tfrecord]
#   BERT_CONFIG        the student's bert_config.json   [required: no default,
#                      a forgotten one must not train a BERT-Base "student";
#                      STAGE=labels: the teacher's]
#   INIT_CHECKPOINT    STAGE=labels: the teacher's checkpoint [required]
#   OUTPUT_DIR         checkpoints, events, eval results [output_dir;
#                      STAGE=labels: the labelled files, data/record_distill]
#   TRUNCATION_FACTOR  [10]     TRAIN_BATCH_SIZE (per GPU)  [128]
#   NUM_TRAIN_STEPS    [2000]   NUM_WARMUP_STEPS            [1000]
#                      (the script divides both by TOTAL_GPUS, as the original)
#   DO_EVAL            [false]
#   IFACE              network interface between the nodes [the default
#                      route's interface, from `ip route`]
#   USE_EC2_METADATA   1: on EC2, take IFACE from the instance metadata (the
#                      interface holding the instance's primary MAC) [0]
#   HOROVOD_HIERARCHICAL_ALLREDUCE [1]   HOROVOD_FUSION_THRESHOLD [67108864]
#   HOROVOD_STALL_CHECK_TIME_SECONDS [60]  warn when ranks wait this long
#   HOROVOD_STALL_SHUTDOWN_TIME_SECONDS [600]  end the job (exit 1, naming a
#                      stalled rank) when no training step is made this long
#   MPI_SIGKILL_TIMEOUT [60]  seconds mpirun waits after passing Ctrl-C on
#                      (as SIGTERM) before it kills the processes: they
#                      finish their step and rank 0 writes a checkpoint
#   NCCL_DEBUG         [WARN]            TF_CPP_MIN_LOG_LEVEL     [1]
#   MPIRUN             [mpirun]
#   MPI_EXTRA_ARGS     more mpirun arguments, split on blanks, e.g.
#                      "-x OMP_NUM_THREADS=4"                 [none]
#   DRY_RUN            1: print the mpirun command, do not run it [0]
#
# Example: two 8-GPU nodes listed in ./hosts, a 6-layer student:
#   BERT_CONFIG=student/bert_config.json bash multinode_train.sh 16 \
#     --learning_rate 1e-4
set -euo pipefail

PROG=$(basename "$0")

usage() {
  sed -n '/^# Usage:/,/they come last/p' "$0" | sed 's/^# \{0,1\}//'
  echo "Settings come from environment variables; see the top of $0."
}

# usage_error MESSAGE: prints the message and the usage, exits 2.
usage_error() {
  echo "$PROG: error: $1" >&2
  usage >&2
  exit 2
}

if [ $# -lt 1 ]; then
  usage_error "missing TOTAL_GPUS"
fi
case $1 in
  -h|--help) usage; exit 0 ;;
esac
if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$((10#$1))" -lt 1 ]; then
  usage_error "TOTAL_GPUS must be a positive integer, found '$1'"
fi
TOTAL_GPUS=$((10#$1))
shift

REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")" && pwd)}
HOSTS_FILE=${HOSTS_FILE:-$REPO_DIR/hosts}
if [ -x "$REPO_DIR/.venv/bin/python" ]; then
  PYTHON=${PYTHON:-$REPO_DIR/.venv/bin/python}
else
  PYTHON=${PYTHON:-python3}
fi
STAGE=${STAGE:-distill}
BERT_CONFIG=${BERT_CONFIG:-}
TRUNCATION_FACTOR=${TRUNCATION_FACTOR:-10}
MPIRUN=${MPIRUN:-mpirun}
case $STAGE in
  distill)
    INPUT_FILE=${INPUT_FILE:-${DATA:-data/record_distill/*.tfrecord}}
    if [ -z "$BERT_CONFIG" ]; then
      usage_error "set BERT_CONFIG to the student's bert_config.json (the teacher's config would train a 12-layer model from random)"
    fi
    OUTPUT_DIR=${OUTPUT_DIR:-output_dir}
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}
    NUM_TRAIN_STEPS=${NUM_TRAIN_STEPS:-2000}
    NUM_WARMUP_STEPS=${NUM_WARMUP_STEPS:-1000}
    DO_EVAL=${DO_EVAL:-false}
    SCRIPT=network_distillation_distributed_truncated.py
    script_flags=(--bert_config_file "$BERT_CONFIG"
                  --input_file "$INPUT_FILE"
                  --output_dir "$OUTPUT_DIR"
                  --truncation_factor "$TRUNCATION_FACTOR"
                  --train_batch_size "$TRAIN_BATCH_SIZE"
                  --num_train_steps "$NUM_TRAIN_STEPS"
                  --num_warmup_steps "$NUM_WARMUP_STEPS"
                  --do_train=true --do_eval="$DO_EVAL") ;;
  labels)
    INPUT_FILE=${INPUT_FILE:-${DATA:-data/record/*.tfrecord}}
    INIT_CHECKPOINT=${INIT_CHECKPOINT:-}
    if [ -z "$BERT_CONFIG" ] || [ -z "$INIT_CHECKPOINT" ]; then
      usage_error "STAGE=labels: set BERT_CONFIG and INIT_CHECKPOINT to the teacher's bert_config.json and checkpoint"
    fi
    OUTPUT_DIR=${OUTPUT_DIR:-data/record_distill}
    SCRIPT=produce_teacher_labels.py
    script_flags=(--bert_config_file "$BERT_CONFIG"
                  --init_checkpoint "$INIT_CHECKPOINT"
                  --input_file "$INPUT_FILE"
                  --output_dir "$OUTPUT_DIR"
                  --truncation_factor "$TRUNCATION_FACTOR") ;;
  *) usage_error "STAGE must be distill or labels, found '$STAGE'" ;;
esac

# The hosts file: count the slots, reject lines mpirun would misread.
if [ ! -f "$HOSTS_FILE" ]; then
  usage_error "hosts file not found: $HOSTS_FILE (set HOSTS_FILE)"
fi
total_slots=0
nodes=0
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  if [[ $line == *$'\r' ]]; then
    usage_error "$HOSTS_FILE has Windows (CRLF) line ends, which mpirun cannot read; convert it: sed -i 's/\\r\$//' $HOSTS_FILE"
  fi
  read -r -a words <<< "${line%%#*}"
  [ ${#words[@]} -eq 0 ] && continue
  slots=""
  for word in "${words[@]:1}"; do
    case $word in
      slots=*) slots=${word#slots=} ;;
      max_slots=*|max-slots=*)
        if ! [[ ${word#*=} =~ ^[1-9][0-9]*$ ]]; then
          usage_error "$HOSTS_FILE line $lineno: ${word%%=*} must be a positive integer, found '$word'"
        fi ;;
      *) usage_error "$HOSTS_FILE line $lineno: unknown word '$word' (expected 'HOST slots=N [max_slots=M]')" ;;
    esac
  done
  if ! [[ $slots =~ ^[1-9][0-9]*$ ]]; then
    usage_error "$HOSTS_FILE line $lineno: expected 'HOST slots=N' (N > 0), found '$line'"
  fi
  total_slots=$((total_slots + slots))
  nodes=$((nodes + 1))
done < "$HOSTS_FILE"
if [ "$nodes" -eq 0 ]; then
  usage_error "$HOSTS_FILE lists no node; expected lines 'HOST slots=N'"
fi
if [ "$TOTAL_GPUS" -gt "$total_slots" ]; then
  usage_error "TOTAL_GPUS=$TOTAL_GPUS is more than the $total_slots slots of the $nodes node(s) in $HOSTS_FILE"
fi

if [ ! -f "$REPO_DIR/$SCRIPT" ]; then
  usage_error "$SCRIPT not found in REPO_DIR=$REPO_DIR"
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  usage_error "PYTHON=$PYTHON not found"
fi
if ! command -v "$MPIRUN" >/dev/null 2>&1; then
  usage_error "$MPIRUN not found (install Open MPI: make setup, or set MPIRUN)"
fi

# Relative paths are opened by processes that start in REPO_DIR (mpirun
# -wdir), not in the folder this script was started from.
relative=()
for setting in INPUT_FILE BERT_CONFIG OUTPUT_DIR INIT_CHECKPOINT; do
  value=${!setting:-/}
  if [[ $value != /* && $value != *://* ]]; then
    relative+=("$setting=$value")
  fi
done
if [ ${#relative[@]} -gt 0 ]; then
  echo "$PROG: relative paths are taken from REPO_DIR=$REPO_DIR: ${relative[*]}" >&2
fi

# ec2_interface: prints the interface that holds this EC2 instance's primary
# MAC address (IMDSv2), or nothing.
ec2_interface() {
  local imds=http://169.254.169.254/latest token mac instance_type dev
  token=$(curl -sf -m 2 -X PUT "$imds/api/token" \
            -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || return 0
  mac=$(curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" \
          "$imds/meta-data/mac") || return 0
  instance_type=$(curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" \
                    "$imds/meta-data/instance-type") || instance_type=unknown
  echo "$PROG: EC2 instance type $instance_type, primary MAC $mac" >&2
  for dev in /sys/class/net/*; do
    if [ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ]; then
      basename "$dev"
      return 0
    fi
  done
}

# default_route_interface: prints the interface of the default route.
default_route_interface() {
  if command -v ip >/dev/null 2>&1; then
    ip route show default 2>/dev/null |
      awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
  elif [ -r /proc/net/route ]; then
    awk '$2 == "00000000" {print $1; exit}' /proc/net/route
  fi
}

if [ -z "${IFACE:-}" ] && [ "${USE_EC2_METADATA:-0}" = 1 ]; then
  IFACE=$(ec2_interface)
  [ -n "$IFACE" ] || echo "$PROG: no interface from the EC2 metadata; using the default route's" >&2
fi
if [ -z "${IFACE:-}" ]; then
  IFACE=$(default_route_interface)
fi

cmd=("$MPIRUN")
if [ "$(id -u)" -eq 0 ]; then
  cmd+=(--allow-run-as-root)
fi
cmd+=(-np "$TOTAL_GPUS" -hostfile "$HOSTS_FILE" -wdir "$REPO_DIR"
      -bind-to none -map-by slot -mca plm_rsh_no_tree_spawn 1
      -mca pml ob1 -mca btl ^openib
      -mca odls_base_sigkill_timeout "${MPI_SIGKILL_TIMEOUT:-60}"
      -x "HOROVOD_HIERARCHICAL_ALLREDUCE=${HOROVOD_HIERARCHICAL_ALLREDUCE:-1}"
      -x "HOROVOD_FUSION_THRESHOLD=${HOROVOD_FUSION_THRESHOLD:-67108864}"
      -x "HOROVOD_STALL_CHECK_TIME_SECONDS=${HOROVOD_STALL_CHECK_TIME_SECONDS:-60}"
      -x "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=${HOROVOD_STALL_SHUTDOWN_TIME_SECONDS:-600}"
      -x "NCCL_DEBUG=${NCCL_DEBUG:-WARN}"
      -x "TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}"
      -x PATH)
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
  cmd+=(-x LD_LIBRARY_PATH)
fi
if [ -n "$IFACE" ]; then
  cmd+=(-x "NCCL_SOCKET_IFNAME=$IFACE" -mca btl_tcp_if_include "$IFACE"
        -mca oob_tcp_if_include "$IFACE")
else
  echo "$PROG: no default route found; MPI and NCCL choose the network interface (set IFACE)" >&2
fi
if [ -n "${MPI_EXTRA_ARGS:-}" ]; then
  read -r -a extra <<< "$MPI_EXTRA_ARGS"
  cmd+=("${extra[@]}")
fi
cmd+=("$PYTHON" "$REPO_DIR/$SCRIPT" "${script_flags[@]}" "$@")

echo "$PROG: $TOTAL_GPUS processes on $nodes node(s) of $HOSTS_FILE ($total_slots slots), interface ${IFACE:-auto}"
printf '%q ' "${cmd[@]}"
echo
if [ "${DRY_RUN:-0}" = 1 ]; then
  exit 0
fi
exec "${cmd[@]}"
