"""Tests of export_bert_checkpoint.py (exporter.py).

The checkpoints exported are the real small BERT (converted by the
converter, saved as a stage V/VI folder would be: two steps, optimizer
slots, global_step, loss scale) and tiny BERTs with Google's run_classifier
and run_squad heads (tanh GELU, random weights). References:

  * the Hugging Face folder converted back by convert_hf_bert_checkpoint.py
    must hold every variable unchanged;
  * a NumPy forward pass over the exported safetensors arrays, with Hugging
    Face's names and layout (hf_reference.py), must give modeling.py's
    outputs;
  * the SavedModel, loaded in a fresh process, must give modeling.py's
    outputs on the checkpoint (heads computed in NumPy here).
"""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file
import tensorflow as tf

from conftest import check_error_runs, check_main_errors, run_script
from hf_reference import HfBert, log_softmax
import convert_hf_bert_checkpoint as convert
from bert_distill.lib import checkpoints
from bert_distill.stages import exporter
import modeling
from bert_distill.lib import outputs

NUM_LABELS = 3
TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64,
        "type_vocab_size": 2, "initializer_range": 0.02}


def read_checkpoint(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def with_training_state(arrays, step):
  """`arrays` plus what a stage V checkpoint also holds."""
  out = dict(arrays)
  for name, value in arrays.items():
    out[name + "/adam_m"] = np.full_like(value, 0.5)
    out[name + "/adam_v"] = np.full_like(value, 0.25)
  out["global_step"] = np.int64(step)
  out["loss_scale"] = np.float32(32768.0)
  out["loss_scale_good_steps"] = np.int64(7)
  return out


def inputs(seq_length=12):
  """A batch of 2: [CLS] A [SEP] B [SEP], the second padded."""
  rng = np.random.default_rng(5)
  ids = rng.integers(1000, 30000, (2, seq_length)).astype(np.int32)
  ids[:, 0], ids[:, 5], ids[:, -1] = 101, 102, 102
  mask = np.ones_like(ids)
  mask[1, 9:] = 0
  ids[1, 9:] = 0
  segments = np.zeros_like(ids)
  segments[:, 6:] = 1
  positions = np.array([[1, 3, 7], [2, 4, 8]], np.int32)
  return ids, mask, segments, positions


@pytest.fixture(scope="module")
def student(tmp_path_factory, teacher_dir):
  """(a stage V-like folder, its config, the BERT arrays of its newest step).

  model.ckpt-1 holds other values than model.ckpt-2, the newest.
  """
  out = str(tmp_path_factory.mktemp("student"))
  arrays = read_checkpoint(os.path.join(teacher_dir, "bert_model.ckpt"))
  older = {n: v * 0.5 for n, v in arrays.items()}
  for step, values in ((1, older), (2, arrays)):
    prefix = checkpoints.save_checkpoint(
        with_training_state(values, step),
        os.path.join(out, "model.ckpt-%d" % step))
    checkpoints.write_checkpoint_index(out, prefix)
  shutil.copy(os.path.join(teacher_dir, "bert_config.json"), out)
  config = modeling.BertConfig.from_json_file(
      os.path.join(out, "bert_config.json"))
  return out, config, arrays


def tiny_checkpoint(directory, head):
  """A tiny BERT with a run_classifier or run_squad head (random weights)."""
  config = modeling.BertConfig.from_dict(TINY)
  shapes = {n: v.shape.as_list() for n, v in
            modeling.BertModel(config).variables_by_name().items()}
  h = config.hidden_size
  if head == "classifier":
    shapes.update({"output_weights": [NUM_LABELS, h],
                   "output_bias": [NUM_LABELS]})
  else:
    shapes.update({"cls/squad/output_weights": [2, h],
                   "cls/squad/output_bias": [2]})
  rng = np.random.default_rng(11)
  arrays = {}
  for name, shape in shapes.items():
    value = rng.normal(0.0, 0.2, shape).astype(np.float32)
    arrays[name] = value + 1.0 if name.endswith("gamma") else value
  os.makedirs(directory)
  checkpoints.save_checkpoint(with_training_state(arrays, 30),
                           os.path.join(directory, "model.ckpt-30"))
  with open(os.path.join(directory, "bert_config.json"), "w") as f:
    json.dump(TINY, f)
  return config, arrays


@pytest.fixture(scope="module")
def task_checkpoints(tmp_path_factory):
  base = tmp_path_factory.mktemp("tasks")
  return {head: (str(base / head),) + tiny_checkpoint(str(base / head), head)
          for head in ("classifier", "squad")}


@pytest.fixture(scope="module")
def hf_export(student, teacher_dir, tmp_path_factory):
  folder, config, _ = student
  out = str(tmp_path_factory.mktemp("export") / "student_hf")
  architecture = exporter.export(
      config, folder, os.path.join(teacher_dir, "vocab.txt"), out, "hf")
  assert architecture == "BertForPreTraining"
  return out


def test_hf_round_trip(student, hf_export, teacher_dir, tmp_path):
  _, config, arrays = student
  assert sorted(os.listdir(hf_export)) == [
      "config.json", "model.safetensors", "tokenizer_config.json",
      "vocab.txt"]
  # Every file has the mode open() gives (safetensors' own is 0600).
  umask = os.umask(0)
  os.umask(umask)
  assert {name: stat.S_IMODE(os.stat(os.path.join(hf_export, name)).st_mode)
          for name in os.listdir(hf_export)} == dict.fromkeys(
              os.listdir(hf_export), 0o666 & ~umask)
  with open(os.path.join(hf_export, "config.json")) as f:
    hf = json.load(f)
  assert hf["architectures"] == ["BertForPreTraining"]
  assert hf["model_type"] == "bert" and hf["layer_norm_eps"] == 1e-12
  assert hf["hidden_act"] == "gelu"  # the teacher's erf GELU ("gelu_exact")
  for key, value in config.to_dict().items():
    if key != "hidden_act":
      assert hf[key] == value, key
  with open(os.path.join(hf_export, "tokenizer_config.json")) as f:
    assert json.load(f)["do_lower_case"] is True
  with open(os.path.join(hf_export, "vocab.txt"), "rb") as f, open(
      os.path.join(teacher_dir, "vocab.txt"), "rb") as g:
    assert f.read() == g.read()
  tensors = load_file(os.path.join(hf_export, "model.safetensors"))
  assert len(tensors) == len(arrays)  # no optimizer slots, no decoder copy
  assert "cls.predictions.decoder.weight" not in tensors
  np.testing.assert_array_equal(
      tensors["bert.encoder.layer.1.intermediate.dense.weight"],
      arrays["bert/encoder/layer_1/intermediate/dense/kernel"].T)

  convert.convert(hf_export, str(tmp_path / "back"))
  back = read_checkpoint(str(tmp_path / "back" / "bert_model.ckpt"))
  assert sorted(back) == sorted(arrays)
  for name, value in arrays.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)
  assert (modeling.BertConfig.from_json_file(
      str(tmp_path / "back" / "bert_config.json")) == config)


def test_hf_arrays_give_our_outputs(student, hf_export):
  folder, config, _ = student
  with open(os.path.join(hf_export, "config.json")) as f:
    reference = HfBert(load_file(os.path.join(hf_export,
                                              "model.safetensors")),
                       json.load(f))
  ids, mask, segments, positions = inputs()
  want_seq = reference.encode(ids, mask, segments)
  want_logits = reference.mlm_logits(want_seq, positions)

  model = modeling.BertPretrainingModel(config)
  checkpoints.load_checkpoint(model.variables_by_name(), folder)
  seq = model.bert(ids, mask, segments).sequence_output
  logits = model(ids, mask, segments, positions).masked_lm_logits
  real = mask.astype(bool)
  print("max |ours - NumPy(HF arrays)|: sequence output %.2e, MLM logits "
        "%.2e" % (np.abs(seq.numpy() - want_seq)[real].max(),
                  np.abs(logits.numpy() - want_logits).max()))
  np.testing.assert_allclose(seq.numpy()[real], want_seq[real], atol=1e-5)
  np.testing.assert_allclose(logits.numpy(), want_logits, atol=1e-5,
                             rtol=1e-6)


def test_hf_task_heads(task_checkpoints, tmp_path):
  ids, mask, segments, _ = inputs()
  real = mask.astype(bool)
  for head, want_architecture, hf_head in (
      ("classifier", "BertForSequenceClassification", "classifier"),
      ("squad", "BertForQuestionAnswering", "qa_outputs")):
    folder, config, arrays = task_checkpoints[head]
    out = str(tmp_path / head)
    assert exporter.export(config, folder, _vocab(), out, "hf",
                           do_lower_case=False) == want_architecture
    with open(os.path.join(out, "config.json")) as f:
      hf = json.load(f)
    with open(os.path.join(out, "tokenizer_config.json")) as f:
      assert json.load(f)["do_lower_case"] is False
    assert hf["architectures"] == [want_architecture]
    assert hf["hidden_act"] == "gelu_new"  # Google's tanh GELU
    tensors = load_file(os.path.join(out, "model.safetensors"))
    assert not [n for n in tensors if n.startswith("cls.")]
    reference = HfBert(tensors, hf)
    sequence = reference.encode(ids, mask, segments)
    got = reference.linear(reference.pooled(sequence) if head == "classifier"
                           else sequence, hf_head)
    # Google's heads on Google's arrays, over modeling.py's encoder.
    model = modeling.BertModel(config)
    checkpoints.load_checkpoint(model.variables_by_name(), folder)
    ours_seq, ours_pooled = [t.numpy() for t in
                             model(ids, mask, segments)[:2]]
    if head == "classifier":
      assert hf["id2label"] == {str(i): "LABEL_%d" % i
                                for i in range(NUM_LABELS)}
      assert "bert.pooler.dense.weight" in tensors
      want = ours_pooled @ arrays["output_weights"].T + arrays["output_bias"]
      np.testing.assert_allclose(got, want, atol=1e-5)
    else:
      assert "bert.pooler.dense.weight" not in tensors  # HF's QA: no pooler
      want = (ours_seq @ arrays["cls/squad/output_weights"].T +
              arrays["cls/squad/output_bias"])
      np.testing.assert_allclose(got[real], want[real], atol=1e-5)
    np.testing.assert_allclose(sequence[real], ours_seq[real], atol=1e-5)
  # The encoder alone, on request.
  folder, config, arrays = task_checkpoints["classifier"]
  exporter.export(config, folder, _vocab(), str(tmp_path / "encoder"), "hf",
                  architecture="BertModel")
  tensors = load_file(str(tmp_path / "encoder" / "model.safetensors"))
  assert len(tensors) == len(arrays) - 2
  assert all(n.startswith("bert.") for n in tensors)


def _vocab():
  import sample_data  # pylint: disable=g-import-not-at-top
  return sample_data.fetch("vocab")


_LOAD_SAVED_MODELS = """
import sys
import numpy as np
import tensorflow as tf
data = dict(np.load(sys.argv[1]))
results = {}
for name in sys.argv[3:]:
  model = tf.saved_model.load(name)
  results[name + ":do_lower_case"] = model.do_lower_case.numpy()
  for signature, dtype in (("serving_default", np.int32),
                           ("serving_int64", np.int64)):
    function = model.signatures[signature]
    args = {k: v.astype(dtype) for k, v in data.items()
            if k in function.structured_input_signature[1]}
    for key, value in function(**{k: tf.constant(v)
                                  for k, v in args.items()}).items():
      results["%s:%s:%s" % (name, signature, key)] = value.numpy()
np.savez(sys.argv[2], **results)
"""


def test_saved_model_in_a_fresh_process(student, task_checkpoints,
                                        teacher_dir, tmp_path):
  ids, mask, segments, positions = inputs()
  exports = {}
  folder, config, _ = student
  exports["pretraining"] = str(tmp_path / "pretraining")
  exporter.export(config, folder, os.path.join(teacher_dir, "vocab.txt"),
                  exports["pretraining"], "saved_model")
  for head in ("classifier", "squad"):
    exports[head] = str(tmp_path / head)
    exporter.export(task_checkpoints[head][1], task_checkpoints[head][0],
                    _vocab(), exports[head], "saved_model",
                    do_lower_case=False)
  for path in exports.values():
    assert os.path.isfile(os.path.join(path, "assets", "vocab.txt"))
  np.savez(tmp_path / "inputs.npz", input_ids=ids, input_mask=mask,
           segment_ids=segments, masked_lm_positions=positions)
  run_script(["-c", _LOAD_SAVED_MODELS, tmp_path / "inputs.npz",
              tmp_path / "outputs.npz"] + list(exports.values()))
  outputs = dict(np.load(tmp_path / "outputs.npz"))

  model = modeling.BertPretrainingModel(config)
  checkpoints.load_checkpoint(model.variables_by_name(), folder)
  mlm, nsp, _ = model(ids, mask, segments, positions)
  seq, pooled = model.bert(ids, mask, segments)[:2]
  want = {"pretraining": {
      "masked_lm_log_probs": log_softmax(mlm.numpy().astype(np.float64)),
      "next_sentence_probs": np.exp(log_softmax(nsp.numpy())),
      "sequence_output": seq.numpy(), "pooled_output": pooled.numpy()}}
  for head in ("classifier", "squad"):
    folder, tiny_config, arrays = task_checkpoints[head]
    encoder = modeling.BertModel(tiny_config)
    checkpoints.load_checkpoint(encoder.variables_by_name(), folder)
    seq, pooled = [t.numpy() for t in encoder(ids, mask, segments)[:2]]
    want[head] = {"sequence_output": seq, "pooled_output": pooled}
    if head == "classifier":
      logits = pooled @ arrays["output_weights"].T + arrays["output_bias"]
      want[head].update(logits=logits,
                        probabilities=np.exp(log_softmax(logits)))
    else:
      logits = (seq @ arrays["cls/squad/output_weights"].T +
                arrays["cls/squad/output_bias"])
      want[head].update(start_logits=logits[..., 0],
                        end_logits=logits[..., 1])
  largest = 0.0
  for name, expected in want.items():
    path = exports[name]
    assert outputs[path + ":do_lower_case"] == (name == "pretraining")
    for signature in ("serving_default", "serving_int64"):
      keys = sorted(k.rsplit(":", 1)[1] for k in outputs
                    if k.startswith("%s:%s:" % (path, signature)))
      assert keys == sorted(expected), (name, keys)
      for key, value in expected.items():
        got = outputs["%s:%s:%s" % (path, signature, key)]
        assert got.shape == value.shape, (name, key)
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-5,
                                   err_msg="%s %s" % (name, key))
        largest = max(largest, float(np.abs(got - value).max()))
  print("max |SavedModel - checkpoint through modeling.py|: %.2e" % largest)


def test_newest_checkpoint_of_a_folder_without_index(tmp_path):
  for step in (2, 10):  # 10 is newer, though "2" sorts after "10".
    checkpoints.save_checkpoint(
        {"global_step": np.int64(step)},
        str(tmp_path / ("model.ckpt-%d" % step)))
  assert checkpoints.resolve_checkpoint(str(tmp_path)) == str(
      tmp_path / "model.ckpt-10")


def _dead_pid():
  """The pid of a process that has ended."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _no_leftovers(parent, final_name):
  return [n for n in os.listdir(parent)
          if n.startswith("." + final_name + ".tmp")]


def test_bad_inputs(student, task_checkpoints, teacher_dir, tmp_path):
  folder, config, _ = student
  vocab = os.path.join(teacher_dir, "vocab.txt")
  classifier_dir, tiny_config, arrays = task_checkpoints["classifier"]

  out = str(tmp_path / "mlm")
  with pytest.raises(exporter.ExportError, match="BertForMaskedLM needs a "
                     "masked-LM head .* holds classifier head") as caught:
    exporter.export(tiny_config, classifier_dir, _vocab(), out,
                    architecture="BertForMaskedLM")
  assert caught.value.argument == "architecture"
  assert not os.path.exists(out) and not _no_leftovers(str(tmp_path), "mlm")

  short_vocab = tmp_path / "short_vocab.txt"
  with open(vocab, encoding="utf-8") as f:
    short_vocab.write_text("".join(f.readlines()[:-1]), encoding="utf-8")
  with pytest.raises(exporter.ExportError,
                     match="has 30521 tokens, the BERT config's vocab_size "
                     "is 30522") as caught:
    exporter.export(config, folder, str(short_vocab), out)
  assert caught.value.argument == "vocab_file" and not os.path.exists(out)

  # A head present in part.
  partial = str(tmp_path / "partial")
  checkpoints.save_checkpoint(
      {n: v for n, v in arrays.items() if n != "output_bias"},
      os.path.join(partial, "model.ckpt-1"))
  with pytest.raises(exporter.ExportError, match="incomplete classifier"):
    exporter.export(tiny_config, partial, _vocab(), out)

  # A non-empty output folder is kept unless --overwrite; --overwrite
  # replaces a folder that holds an earlier export, and nothing else.
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "keep.txt").write_text("mine")
  (existing / ".ssh").mkdir()
  with pytest.raises(exporter.ExportError, match="exists and is not empty"):
    exporter.export(config, folder, vocab, str(existing))
  with pytest.raises(exporter.ExportError, match=(
      r"existing holds \.ssh, keep\.txt, which no export writes: "
      r"--overwrite replaces only a folder that holds an earlier export")):
    exporter.export(config, folder, vocab, str(existing), overwrite=True)
  assert sorted(os.listdir(existing)) == [".ssh", "keep.txt"]
  earlier = tmp_path / "earlier"
  exporter.export(config, folder, vocab, str(earlier))
  (earlier / "config.json").write_text("{}")  # an older export's
  exporter.export(config, folder, vocab, str(earlier), overwrite=True)
  assert sorted(os.listdir(earlier)) == [
      "config.json", "model.safetensors", "tokenizer_config.json",
      "vocab.txt"]
  assert json.loads((earlier / "config.json").read_text())["architectures"]
  assert not _no_leftovers(str(tmp_path), "earlier")

  # Onto a link to a folder: the export goes where the link points, the
  # link stays, nothing is left beside it.
  target = tmp_path / "target"
  exporter.export(config, folder, vocab, str(target))
  link = tmp_path / "link"
  link.symlink_to(target)
  for spelling in (str(link), str(link) + "/"):
    exporter.export(config, folder, vocab, spelling, overwrite=True)
  assert link.is_symlink() and sorted(os.listdir(link)) == sorted(
      os.listdir(target))
  assert not _no_leftovers(str(tmp_path), "link")
  assert not _no_leftovers(str(tmp_path), "target")

  # Temporaries of a killed export (a dead pid) go with the next export of
  # the same name; another name's are left alone.
  dead = _dead_pid()
  stale = tmp_path / (".again.tmp-%s-%d" % (outputs.this_host(), dead))
  other = tmp_path / (".other.tmp-%s-%d" % (outputs.this_host(), dead))
  stale.mkdir()
  other.mkdir()
  exporter.export(config, folder, vocab, str(tmp_path / "again"))
  assert not stale.exists() and other.exists()

  # A checkpoint whose data fails its checksum (one byte flipped).
  flipped = tmp_path / "flipped"
  shutil.copytree(folder, flipped)
  data = sorted(flipped.glob("model.ckpt-*.data-*"))[-1]
  raw = bytearray(data.read_bytes())
  raw[10] ^= 0xFF  # in the first variable (bert/embeddings/...)
  data.write_bytes(bytes(raw))
  with pytest.raises(exporter.ExportError, match=(
      r"is damaged \(its data fails the checksum: corrupted on disk or in "
      r"transfer\)")) as caught:
    exporter.export(config, str(flipped), vocab, str(tmp_path / "f"))
  assert caught.value.argument == "init_checkpoint"
  before = sorted(os.listdir(folder))
  with pytest.raises(exporter.ExportError, match="which no export writes"):
    exporter.export(config, folder, vocab, folder, overwrite=True)
  # A folder of export names alone that holds an input (the vocabulary).
  holds_vocab = tmp_path / "holds_vocab"
  holds_vocab.mkdir()
  shutil.copy(vocab, holds_vocab / "vocab.txt")
  with pytest.raises(exporter.ExportError, match="an input of this export"):
    exporter.export(config, folder, str(holds_vocab / "vocab.txt"),
                    str(holds_vocab), overwrite=True)
  assert sorted(os.listdir(folder)) == before

  # The script: one line naming the flag, exit status 1.
  script = "export_bert_checkpoint.py"
  common = ["--bert_config_file", os.path.join(folder, "bert_config.json"),
            "--init_checkpoint", folder]
  # The process (exit 1, one line, no traceback) once; the other message
  # through the script's main in this process.
  lines = check_error_runs({
      "not empty": ([script] + common + [
          "--vocab_file", vocab, "--output_dir", existing],
                    "--output_dir: %s exists and is not empty" % existing)})
  lines.update(check_main_errors(script[:-3], {
      "vocab": (common + [
          "--vocab_file", short_vocab, "--output_dir", tmp_path / "cli"],
                "--vocab_file: %s has 30521 tokens" % short_vocab)}))
  assert "--overwrite" in lines["not empty"]
  assert not os.path.exists(tmp_path / "cli")
