"""Shared output format for the benchmarks under bench/.

Every benchmark measures this project and a peer in the same run and ends by
calling `report(...)` once per figure. `report` prints a readable line and a
machine-readable `BENCH_RESULT {json}` line that bench/run_all.sh collects
into one table.
"""

import json
import sys


def report(stage, metric, ours, peer, peer_name, note=""):
  """Prints one benchmark figure: ours, the peer's, and their ratio.

  Args:
    stage: e.g. "III create_pretraining_data".
    metric: e.g. "instances/s" (higher is better).
    ours: this project's figure.
    peer: the peer's figure, measured in the same run.
    peer_name: what the peer is, e.g. "original BERT script, 1 process".
    note: anything a reader needs to compare fairly.
  """
  ratio = ours / peer if peer else float("nan")
  print("%s: %s ours %.1f, %s %.1f, ratio %.2fx%s" %
        (stage, metric, ours, peer_name, peer, ratio,
         " (%s)" % note if note else ""))
  print("BENCH_RESULT " + json.dumps({
      "stage": stage, "metric": metric, "ours": ours, "peer": peer,
      "peer_name": peer_name, "ratio": ratio, "note": note}))
  sys.stdout.flush()
