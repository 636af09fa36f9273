#!/usr/bin/env bash
# Builds Horovod 0.28.1 from its source release against the TensorFlow installed
# in $VENV and installs it there.
#
# Horovod 0.28.1 is the last release; it builds against TF 2.21 once the
# optional XLA ops source (horovod/tensorflow/xla_mpi_ops.cc, which includes
# headers TF 2.21 no longer ships) is removed from its CMake list. The built
# wheel is kept in a cache folder keyed by Python, TF and GPU settings, so a
# second virtual environment on the same machine installs it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$(pwd)/$VENV/bin/python"
HVD_VERSION=0.28.1
# TensorFlow's start-up notices ignore TF_CPP_MIN_LOG_LEVEL: the imports here
# show their stderr only when they fail.
quietly() { local out; out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }; }
tf_version=$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) ||
  quietly "$PY" -c 'import tensorflow'  # shows why it failed
py_tag=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
flavour=cpu; [ -n "${HOROVOD_GPU_OPERATIONS:-}" ] && flavour="gpu-${HOROVOD_GPU_OPERATIONS}"
cache=${HOROVOD_WHEEL_CACHE:-$HOME/.cache/bert-distill/horovod-$HVD_VERSION-$py_tag-tf$tf_version-$flavour}

if ! ls "$cache"/horovod-*.whl >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "build_horovod: building Horovod $HVD_VERSION against TensorFlow $tf_version (a few minutes)"
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "horovod==$HVD_VERSION"
  tar -xzf "$work"/horovod-$HVD_VERSION.tar.gz -C "$work"
  src="$work/horovod-$HVD_VERSION"
  sed -i '/xla_mpi_ops\.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  if grep -q xla_mpi_ops "$src/horovod/tensorflow/CMakeLists.txt"; then
    echo "build_horovod: could not remove xla_mpi_ops.cc from the CMake list" >&2; exit 1
  fi
  export CMAKE_POLICY_VERSION_MINIMUM=3.5
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
  export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  export MAKEFLAGS="-j$(nproc)"
  mkdir -p "$cache"
  (cd "$src" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" .) \
    > "$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; echo "build_horovod: build failed (log above)" >&2; exit 1; }
  cp "$work"/dist/horovod-*.whl "$cache"/
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$cache"/horovod-*.whl
quietly "$PY" -c "import horovod.tensorflow as hvd; assert hvd.mpi_built() and hvd.gloo_built(), 'Horovod built without MPI or Gloo'"
echo "build_horovod: Horovod $HVD_VERSION installed (MPI and Gloo)"
