"""What the machine offers for bfloat16: units that compute it, or none.

bfloat16 matrix multiplications are fast only on hardware with bfloat16
units: CPUs with AVX512-BF16 (Intel Cooper Lake, Sapphire Rapids and later;
AMD Zen 4 and later) or AMX (Intel Sapphire Rapids and later), and NVIDIA
GPUs of compute capability 8.0 or more (A100, H100, L4, RTX 30xx and later).
Elsewhere TensorFlow still computes in bfloat16, converting in software,
which is slower than float32.

  support = hardware.bfloat16_support()
  support.fast    # True with bf16 units
  support.what    # e.g. "CPU AMD EPYC: avx512_bf16"
"""

import collections

from absl import logging
import tensorflow as tf

CPUINFO = "/proc/cpuinfo"
# /proc/cpuinfo flags of CPU bfloat16 units.
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# The first NVIDIA compute capability with bfloat16 tensor cores (Ampere).
GPU_BFLOAT16_CAPABILITY = (8, 0)

Bfloat16Support = collections.namedtuple("Bfloat16Support", "fast what")

_warned = set()


def cpu_model_and_flags(cpuinfo_text):
  """(model name, set of flags) of the first processor in /proc/cpuinfo text."""
  model, cpu_flags = "unknown CPU", set()
  for line in cpuinfo_text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model == "unknown CPU":
      model = value.strip()
    elif key == "flags" and not cpu_flags:
      cpu_flags = set(value.split())
  return model, cpu_flags


def _read_cpuinfo(path):
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ""


def bfloat16_support(cpuinfo_path=CPUINFO, gpus=None):
  """Whether this machine has bfloat16 units, and which.

  Args:
    cpuinfo_path: the CPU description (Linux's /proc/cpuinfo).
    gpus: [(name, (major, minor))] of the GPUs TensorFlow uses; default:
      read from TensorFlow.

  Returns:
    A `Bfloat16Support`: fast (bool) and what (one line naming the device
    and its bfloat16 units, or their absence).
  """
  if gpus is None:
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
      details = tf.config.experimental.get_device_details(gpu)
      gpus.append((details.get("device_name", gpu.name),
                   tuple(details.get("compute_capability", (0, 0)))))
  if gpus:
    name, capability = gpus[0]
    fast = tuple(capability) >= GPU_BFLOAT16_CAPABILITY
    return Bfloat16Support(fast, "GPU %s (compute capability %d.%d): %s" % (
        name, capability[0], capability[1],
        "bfloat16 tensor cores" if fast else "no bfloat16 units"))
  model, cpu_flags = cpu_model_and_flags(_read_cpuinfo(cpuinfo_path))
  units = [f for f in CPU_BFLOAT16_FLAGS if f in cpu_flags]
  return Bfloat16Support(bool(units), "CPU %s: %s" % (
      model, ", ".join(units) if units else
      "no bfloat16 units (no %s)" % " or ".join(CPU_BFLOAT16_FLAGS)))


def warn_if_bfloat16_is_slow(purpose, support=None):
  """Logs once per purpose when bfloat16 would run without bf16 units.

  Args:
    purpose: what will compute in bfloat16, e.g. "the teacher".
    support: a `Bfloat16Support` (default: `bfloat16_support()`).

  Returns:
    The `Bfloat16Support`.
  """
  support = support or bfloat16_support()
  if not support.fast and purpose not in _warned:
    _warned.add(purpose)
    logging.warning(
        "%s computes in bfloat16, but this machine has no bfloat16 units "
        "(%s): it works, slower than in float32", purpose, support.what)
  return support
