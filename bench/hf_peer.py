"""The peer of the stage-IV benchmark: Hugging Face BertForMaskedLM (PyTorch).

No TensorFlow here: bench/bench_teacher_labels.py runs `HFPeer` in its own
process (the steady state, tensors in memory) and runs this file as a
process of its own, so that the peer's whole-process time (Python start,
torch and transformers imports, loading the weights, labelling, writing the
labels) compares with `produce_teacher_labels.py`'s:

  python bench/hf_peer.py --config peer_config.json --state peer_state.pt \
      --inputs inputs.npz --output labels.npz --dtype bfloat16 --k 10 \
      --batch_size 32

config: BertConfig keyword arguments as JSON; state: a state dict saved with
torch.save; inputs: input_ids, input_mask, segment_ids, masked_lm_positions
[n, ...] int arrays.
"""

import argparse
import json
import sys
import time

import numpy as np


class HFPeer(object):
  """BertForMaskedLM, its head at the masked positions, softmax and top-K."""

  def __init__(self, config_kwargs, state_dict, inputs, dtype, k,
               batch_size):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.dtype = dtype
    self.k = k
    self.model = transformers.BertForMaskedLM(
        transformers.BertConfig(**config_kwargs))
    missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
    missing = [m for m in missing if not m.startswith(
        "cls.predictions.decoder")]  # tied to the word embeddings
    assert not missing and not unexpected, (missing, unexpected)
    self.model.tie_weights()
    self.model.eval()
    names = {"input_ids": "input_ids", "attention_mask": "input_mask",
             "token_type_ids": "segment_ids",
             "positions": "masked_lm_positions"}
    n = len(inputs["input_ids"])
    self.batches = [
        {key: torch.tensor(np.asarray(inputs[name][start:start + batch_size],
                                      np.int64))
         for key, name in names.items()}
        for start in range(0, n, batch_size)]

  def run(self, num_batches=None):
    """Labels the batches; returns (records labelled, [(probs, ids)])."""
    torch = self.torch
    count, labels = 0, []
    with torch.no_grad(), torch.autocast(
        "cpu", dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
      for batch in self.batches[:num_batches]:
        hidden = self.model.bert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"]).last_hidden_state
        index = batch["positions"].unsqueeze(-1).expand(-1, -1,
                                                        hidden.shape[-1])
        logits = self.model.cls(torch.gather(hidden, 1, index))
        probs = torch.softmax(logits.float(), dim=-1)
        top = torch.topk(probs, self.k, dim=-1)
        labels.append((top.values.numpy(), top.indices.numpy()))
        count += len(batch["input_ids"])
    return count, labels


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for name in ("--config", "--state", "--inputs", "--output"):
    parser.add_argument(name, required=True)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                      default="float32")
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--threads", type=int, default=0)
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  with open(args.config) as f:
    config = json.load(f)
  inputs = dict(np.load(args.inputs))
  peer = HFPeer(config, torch.load(args.state), inputs, args.dtype, args.k,
                args.batch_size)
  start = time.perf_counter()
  count, labels = peer.run()
  np.savez(args.output, probs=np.concatenate([p for p, _ in labels]),
           ids=np.concatenate([i for _, i in labels]))
  print("labelled %d records in %.1f s" % (count, time.perf_counter() - start))


if __name__ == "__main__":
  main(sys.argv[1:])
