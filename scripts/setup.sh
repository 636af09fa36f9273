#!/usr/bin/env bash
# Sets up everything the project needs on a fresh Debian machine, as root:
# Debian packages (OpenMPI, CMake), a virtual environment in .venv with the
# pinned requirements, and Horovod built against the installed TensorFlow.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
for pkg in openmpi-bin libopenmpi-dev cmake make g++; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt requirements-dev.txt | sha1sum | cut -d' ' -f1)${TF_PACKAGE:+-$TF_PACKAGE}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements.txt and requirements-dev.txt into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  if [ -n "${TF_PACKAGE:-}" ]; then
    # e.g. TF_PACKAGE='tensorflow[and-cuda]==2.21.0' on a GPU machine
    grep -v '^tensorflow-cpu' requirements.txt > "$VENV/requirements.gpu.txt"
    grep -v '^-r ' requirements-dev.txt > "$VENV/requirements-dev.gpu.txt"
    "$VENV/bin/python" -m pip install -q "$TF_PACKAGE" -r "$VENV/requirements.gpu.txt" \
      -r "$VENV/requirements-dev.gpu.txt"
  else
    "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
  fi
  # Earlier pins had matplotlib (the demo's picture is SVG now). Keras
  # imports it at every TensorFlow start where it is installed (0.6 s a
  # process), so a .venv made with those pins drops it.
  "$VENV/bin/python" -m pip uninstall -y -q matplotlib >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi

# Horovod: built once per installed TensorFlow. Its stamp (the pins' stamp
# when it was last checked) saves importing TensorFlow (seconds) on every
# `make test` when nothing changed.
hvd_stamp="$VENV/.horovod.sha"
if [ "$(cat "$hvd_stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$VENV/bin/python" -c "import horovod.tensorflow" >/dev/null 2>&1; then
    VENV="$VENV" bash scripts/build_horovod.sh
  fi
  # TensorFlow's start-up notices (absl's InitializeLog warning, oneDNN's
  # note) ignore TF_CPP_MIN_LOG_LEVEL: shown only if the import fails.
  out=$("$VENV/bin/python" -c "import horovod.tensorflow" 2>&1) || {
    echo "$out" >&2; exit 1; }
  echo "$want" > "$hvd_stamp"
fi
echo "setup: done ($VENV ready: $("$VENV/bin/python" -c '
from importlib import metadata
def version(*names):
  for name in names:
    try:
      return metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return "?"
print("tensorflow", version("tensorflow-cpu", "tensorflow"), "horovod", version("horovod"))'))"
