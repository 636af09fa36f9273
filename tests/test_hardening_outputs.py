# coding=utf-8
"""Hostile-user cases (issue 12) about files: damaged inputs name the file
and the record, settings are checked, outputs are whole or absent (paths,
links, a full disk), one run per stage V folder, checkpoints checked on
resume, Ctrl-C in training saves one. tests/test_hardening.py has those
about commands and processes.

Where the process itself matters (Ctrl-C, exit codes) the scripts run as
real processes; elsewhere a script's `main` or the library function is
called in-process to keep the suite fast.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from bert_distill import cli
import conftest
from bert_distill.lib import errors
import helpers
import inprocess
from bert_distill.lib import outputs
from conftest import REPO
from conftest import run_script
from conftest import run_two_at_a_time
from conftest import script_env
from conftest import stage3_command
from helpers import default_sigint
from helpers import wait_until

WIKI = "wikiextractor/wiki_to_text.py"


# ---------------------------------------------------------------------------
# Small real inputs for stages IV and V.
# ---------------------------------------------------------------------------

SEQ, PREDS, K = 64, 10, 10  # conftest's sizes


def copy_records(source, path, count):
  """Writes the first `count` records of `source` (bytes unchanged)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(str(path)) as writer:
    for raw in tf.data.TFRecordDataset(source).take(count):
      writer.write(raw.numpy())
  return str(path)


def cut_file(source, path):
  """A copy of `source` without its last 10 bytes: its last record is cut.

  (A cut exactly between two records would leave a shorter file that is
  whole as far as its framing can tell.)
  """
  data = open(source, "rb").read()
  path.write_bytes(data[:-10])
  return str(path)


def flip_byte(source, path, offset):
  data = bytearray(open(source, "rb").read())
  data[offset] ^= 0x55
  path.write_bytes(bytes(data))
  return str(path)


@pytest.fixture(scope="module")
def small_stage4(tmp_path_factory, stage4_file):
  return copy_records(stage4_file, tmp_path_factory.mktemp("s4") /
                      "small.tfrecord", 48)


def student_options(config_path, input_file, output_dir, **kwargs):
  values = dict(
      bert_config_file=str(config_path), input_file=str(input_file),
      output_dir=str(output_dir), truncation_factor=K, max_seq_length=SEQ,
      max_predictions_per_seq=PREDS, train_batch_size=4, eval_batch_size=8,
      num_train_steps=2, num_warmup_steps=0, save_checkpoints_steps=2,
      log_every_n_steps=1, max_eval_steps=2, do_train=True)
  values.update(kwargs)
  return inprocess.options("distillation_flags", **values)


def tiny_config(path, **changes):
  import json  # pylint: disable=g-import-not-at-top
  config = {
      "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "intermediate_size": 32, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "max_position_embeddings": SEQ, "type_vocab_size": 2,
      "initializer_range": 0.02}
  config.update(changes)
  for key in [k for k, v in config.items() if v is None]:
    del config[key]
  path.write_text(json.dumps(config))
  return str(path)


# ---------------------------------------------------------------------------
# Case 5: damaged TFRecords name the file and the record.
# ---------------------------------------------------------------------------


def test_damaged_records_name_the_file_and_record(tmp_path, small_stage4):
  from bert_distill.lib import errors  # pylint: disable=g-import-not-at-top
  from bert_distill.lib import records  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Record i starts at the sum of the earlier records' frames (12 bytes of
  # length and its checksum, the data, 4 bytes of checksum).
  sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(small_stage4)]
  starts = [sum(s + 16 for s in sizes[:i]) for i in range(len(sizes))]
  total = starts[-1] + sizes[-1] + 16
  assert os.path.getsize(small_stage4) == total
  # Cut inside record 20.
  data = open(small_stage4, "rb").read()
  cut = tmp_path / "cut.tfrecord"
  cut.write_bytes(data[:starts[20] + 100])
  cut = str(cut)
  cut_index = 20
  corrupt = flip_byte(small_stage4, tmp_path / "crc.tfrecord",
                      starts[7] + 12 + 30)  # inside record 7's data
  with pytest.raises(errors.DamagedFileError,
                     match=r"cut\.tfrecord: record %d .*cut short" %
                     cut_index):
    records.count_records([small_stage4, cut])
  with pytest.raises(errors.DamagedFileError,
                     match=r"crc\.tfrecord: record 7 .*checksum"):
    records.check_records(corrupt)
  assert records.check_records(small_stage4) == len(sizes)


def test_stage5_damaged_training_and_eval_files(tmp_path, small_stage4):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  from bert_distill.lib import errors  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  cut = cut_file(small_stage4, tmp_path / "cut.tfrecord")
  # A damaged training file: named, whichever record the reader was at.
  opts = student_options(config, cut, tmp_path / "train_out",
                         num_train_steps=40)
  with pytest.raises(errors.DamagedFileError, match=r"cut\.tfrecord: "
                     r"record \d+ .*cut short"):
    distillation.run(opts)
  # A damaged eval file: found before training (--check_inputs), so no
  # training time is lost and no checkpoint written.
  out = tmp_path / "eval_out"
  opts = student_options(config, small_stage4, out, do_eval=True,
                         eval_input_file=cut)
  with pytest.raises(errors.DamagedFileError, match=r"cut\.tfrecord"):
    distillation.run(opts)
  assert not os.path.exists(out / "checkpoint")


# ---------------------------------------------------------------------------
# Cases 7, 8 and 14 (warmup): stage V settings.
# ---------------------------------------------------------------------------


def test_eval_only_needs_a_checkpoint(tmp_path, small_stage4):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  wrong = tmp_path / "typo_out"
  opts = student_options(config, small_stage4, wrong, do_train=False,
                         do_eval=True)
  with pytest.raises(cli.UserError, match=r"nothing to evaluate.*typo_out "
                     r"holds no checkpoint"):
    distillation.run(opts)
  assert not wrong.exists()
  # On purpose: the untrained student as a baseline.
  opts.eval_untrained = True
  distillation.check_something_to_evaluate(opts)


def test_bert_config_keys_are_all_required_and_checked(tmp_path):
  import modeling  # pylint: disable=g-import-not-at-top
  path = tmp_path / "c.json"
  for changes, message in (
      ({"intermediate_size": None}, r"has no intermediate_size \(all "
       r"eleven keys"),
      ({"num_hiden_layers": 6}, r"unknown key 'num_hiden_layers'; did you "
       r"mean 'num_hidden_layers'\?"),
      ({"hidden_size": None}, r"has no hidden_size"),
      ({"position_embedding_type": "relative_key"},
       r"position_embedding_type is 'relative_key'")):
    with pytest.raises(cli.UserError, match=r"--bert_config_file: .*c\.json: .*"
                       + message):
      cli.load_bert_config(tiny_config(path, **changes),
                           "--bert_config_file")
  # The extra keys of real Google (multilingual) and Hugging Face configs.
  extra = {"directionality": "bidi", "pooler_fc_size": 768,
           "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3,
           "pooler_size_per_head": 128, "pooler_type": "first_token_transform",
           "model_type": "bert", "architectures": ["BertForMaskedLM"],
           "transformers_version": "4.40.0", "layer_norm_eps": 1e-12,
           "pad_token_id": 0, "position_embedding_type": "absolute",
           "use_cache": True, "torch_dtype": "float32"}
  config = cli.load_bert_config(tiny_config(path, **extra), "--x")
  assert config.to_dict() == modeling.BertConfig.from_json_file(
      tiny_config(path)).to_dict()


def test_warmup_longer_than_training_warns(tmp_path, caplog):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  opts = student_options("c.json", "x", tmp_path, num_train_steps=10,
                         num_warmup_steps=20)
  distillation.check_options(opts)
  assert "--num_warmup_steps=20 is more than --num_train_steps=10" in (
      caplog.text)


# ---------------------------------------------------------------------------
# Stage IV: output paths (case 9), damaged inputs (case 5), resuming.
# ---------------------------------------------------------------------------


def test_output_file_paths_are_checked_first(tmp_path):
  folder = tmp_path / "existing"
  folder.mkdir()
  with pytest.raises(cli.UserError, match=r"--output_file: .*existing is a "
                     r"folder; give a file name"):
    cli.check_output_file(str(folder))
  with pytest.raises(cli.UserError, match=r"newdir/ is a folder"):
    cli.check_output_file(str(tmp_path / "newdir") + "/")
  assert not (tmp_path / "newdir").exists()
  path = str(tmp_path / "made" / "out.tfrecord")
  assert cli.check_output_file(path) == path
  assert (tmp_path / "made").is_dir()


def test_atomic_output_onto_a_folder_leaves_no_temporary(tmp_path):
  folder = tmp_path / "taken"
  folder.mkdir()
  with pytest.raises(errors.OutputError) as raised:
    with outputs.atomic_output(str(folder)) as tmp:
      with open(tmp, "w") as f:
        f.write("x" * 1000)
  assert cli.error_line(raised.value) == (
      "%s is a folder; a file is written there: move the folder away" %
      folder, 1)
  assert os.listdir(tmp_path) == ["taken"]


def labels_command(teacher_dir, input_file, output_file, *extra):
  return ["produce_teacher_labels.py",
          "--bert_config_file", os.path.join(teacher_dir, "bert_config.json"),
          "--init_checkpoint", os.path.join(teacher_dir, "bert_model.ckpt"),
          "--input_file", input_file, "--output_file", output_file,
          "--truncation_factor", K, "--max_seq_length", SEQ,
          "--max_predictions_per_seq", PREDS, "--batch_size", 16] + list(extra)


def test_stage4_skips_a_complete_output_and_names_damaged_input(
    tmp_path, stage3_dir, teacher_dir, caplog):
  from bert_distill.lib import records  # pylint: disable=g-import-not-at-top
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       tmp_path / "small.tfrecord", 40)
  out = tmp_path / "labels" / "small_k10.tfrecord"
  # A fresh interpreter: its TensorFlow import is what the notices come from.
  first_run = run_script(labels_command(teacher_dir, small, out), fresh=True)
  first = out.read_bytes()
  # Log noise: our lines, not TensorFlow's import notices nor the ~200
  # loaded variable names (those only with --verbosity=1).
  for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard",
                "Initialised from the checkpoint"):
    assert noise not in first_run.stderr, noise
  assert "teacher labels: done, 40 seq" in first_run.stderr
  # A rerun keeps the complete output (the reruns in this process).
  caplog.set_level("INFO", logger="absl")
  inprocess.run_main("produce_teacher_labels",
                     labels_command(teacher_dir, small, out)[1:])
  assert re.search(r"small_k10\.tfrecord is complete \(40 records.*skipped",
                   caplog.text), caplog.text[-2000:]
  assert out.read_bytes() == first
  assert sorted(os.listdir(out.parent)) == [".small_k10.tfrecord.made-by.json",
                                            "small_k10.tfrecord"]
  # Another teacher (one weight changed), then other input records of the
  # same count: each rerun labels again, naming what differs.
  other_teacher = helpers.teacher_with_changed_weight(
      teacher_dir, tmp_path / "other_teacher")
  for change, differs in (
      (lambda: None, "the teacher checkpoint"),
      (lambda: copy_records(os.path.join(stage3_dir, "wiki_1.tfrecord"),
                            small, 40), "the input files")):
    change()
    caplog.clear()
    inprocess.run_main("produce_teacher_labels",
                       labels_command(str(other_teacher), small, out)[1:])
    assert re.search(r"small_k10\.tfrecord is complete but was not made by "
                     r"this run's settings \(it differs in: %s\): labelling "
                     r"again" % differs, caplog.text), caplog.text[-2000:]
    assert out.read_bytes() != first
    first = out.read_bytes()
  # A cut output (an interrupted copy) is labelled again, whole.
  cut_file(str(out), out)
  caplog.clear()
  inprocess.run_main("produce_teacher_labels",
                     labels_command(teacher_dir, small, out)[1:])
  assert "labelling again" in caplog.text, caplog.text[-2000:]
  assert records.check_records(str(out)) == 40
  assert records.validate_file(str(out), records.stage4_lengths(SEQ, PREDS,
                                                                K))
  # A damaged input: one line naming the file and record; an output path
  # that is a folder: one line, before any work, nothing left in the cwd.
  cut = cut_file(small, tmp_path / "cut.tfrecord")
  before = set(os.listdir(REPO))
  results = run_two_at_a_time([
      labels_command(teacher_dir, cut, tmp_path / "x.tfrecord"),
      labels_command(teacher_dir, small, tmp_path / "labels")])
  for (status, _, stderr), message in zip(results, (
      r"error: \S*cut\.tfrecord: record \d+ \(counting from 0\) is cut short",
      r"error: --output_file: \S*labels is a folder")):
    assert status == 1 and re.search(message, stderr), stderr[-2000:]
    assert "Traceback" not in stderr
  assert set(os.listdir(REPO)) == before
  assert not (tmp_path / "x.tfrecord").exists()


def test_an_output_that_is_an_input_through_a_link_is_refused(
    tmp_path, stage3_dir, teacher_dir, wiki_text_dir, vocab_file):
  """Stage IV's --output_file and stage III's --output_dir are compared with
  their inputs as files (links, `//`, `..`), not as path strings."""
  from conftest import check_main_errors  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  data.mkdir()
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       data / "small.tfrecord", 8)
  alias = tmp_path / "alias"
  alias.symlink_to(data)
  text = tmp_path / "text"
  text.symlink_to(wiki_text_dir)
  before = sorted(os.listdir(data))
  check_main_errors("produce_teacher_labels", {
      name: (labels_command(teacher_dir, small, output)[1:],
             "--output_file %s is the input file %s" % (output, small))
      for name, output in (
          ("link", str(alias / "small.tfrecord")),
          ("double slash", str(data) + "//small.tfrecord"),
          ("dot dot", str(alias / ".." / "data" / "small.tfrecord")))})
  assert sorted(os.listdir(data)) == before
  assert open(small, "rb").read() == open(copy_records(
      os.path.join(stage3_dir, "wiki_0.tfrecord"), tmp_path / "again", 8),
                                           "rb").read()
  check_main_errors("create_pretraining_data", {
      name: (stage3_command(wiki_text_dir, output, vocab_file)[1:],
             "--output_dir %s is --input_dir %s: a rerun would read this "
             "run's records as text" % (output, wiki_text_dir))
      for name, output in (("same", wiki_text_dir), ("link", str(text)))})
  assert not [n for n in os.listdir(wiki_text_dir) if "tfrecord" in n]


# ---------------------------------------------------------------------------
# Cases 4 and 11: a full disk. Stage IV writes through /dev/full (a real
# ENOSPC from the kernel) in place of its temporary; checkpoints get the error TensorFlow's SaveV2
# raises on a full disk, injected after the files were written.
# ---------------------------------------------------------------------------


def full_disk_at_save(monkeypatch):
  """Makes SaveV2 write its files and then fail as on a full disk."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  real = tf.raw_ops.SaveV2

  def save(prefix, tensor_names, shape_and_slices, tensors, name=None):
    real(prefix=prefix, tensor_names=tensor_names,
         shape_and_slices=shape_and_slices, tensors=tensors, name=name)
    raise tf.errors.ResourceExhaustedError(
        None, None, "%s.data-00000-of-00001.tempstate1; No space left on "
        "device [Op:SaveV2]" % prefix)

  monkeypatch.setattr(tf.raw_ops, "SaveV2", save)


def folder_state(path):
  return {name: open(os.path.join(path, name), "rb").read()
          for name in sorted(os.listdir(path))}


def test_stage4_disk_full_leaves_nothing(tmp_path, stage3_dir, teacher_dir,
                                         monkeypatch):
  import modeling  # pylint: disable=g-import-not-at-top
  from bert_distill.stages import teacher  # pylint: disable=g-import-not-at-top
  small = copy_records(os.path.join(stage3_dir, "wiki_0.tfrecord"),
                       tmp_path / "small.tfrecord", 40)
  out_dir = tmp_path / "labels"
  out_dir.mkdir()
  final = str(out_dir / "wiki_k10.tfrecord")
  with open(final, "wb") as f:
    f.write(b"an earlier output")
  # The temporary, once claimed, is made a link to /dev/full (a planted
  # link would be removed, not followed: test_no_run_writes_through_...).
  claim = outputs.claim_temporary

  def claim_on_a_full_disk(path):
    claim(path)
    os.remove(path)
    os.symlink("/dev/full", path)
    return path

  monkeypatch.setattr(outputs, "claim_temporary", claim_on_a_full_disk)
  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  labeler = teacher.TeacherLabeler(
      config, os.path.join(teacher_dir, "bert_model.ckpt"), K)
  with pytest.raises(Exception) as raised:
    with outputs.atomic_output(final) as tmp:
      teacher.label_records(labeler, [small], tmp, SEQ, PREDS, 16)
  message, status = cli.error_line(raised.value)
  assert status == 1
  assert message.startswith("no space left on device while writing %s;" %
                            final), message
  assert folder_state(out_dir) == {"wiki_k10.tfrecord": b"an earlier output"}


def test_stage5_disk_full_keeps_earlier_checkpoints(tmp_path, small_stage4,
                                                    monkeypatch):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "student.json")
  out = tmp_path / "out"
  distillation.run(student_options(config, small_stage4, out))
  before = folder_state(out)
  assert "model.ckpt-2.index" in before
  full_disk_at_save(monkeypatch)
  with pytest.raises(Exception) as raised:
    distillation.run(student_options(config, small_stage4, out,
                                     num_train_steps=4))
  message, status = cli.error_line(raised.value)
  assert status == 1 and message.startswith(
      "no space left on device while writing %s;" % (out / "model.ckpt-4"))
  after = folder_state(out)
  for name in [n for n in before if n.startswith(("model.ckpt", "check"))]:
    assert after[name] == before[name], name
  assert not [n for n in after if ".tmp-" in n or "ckpt-4" in n], after


def test_converter_into_an_existing_folder_survives_a_full_disk(
    tmp_path, small_bert_hf_dir, teacher_dir, monkeypatch):
  import shutil  # pylint: disable=g-import-not-at-top
  import convert_hf_bert_checkpoint as convert  # pylint: disable=g-import-not-at-top
  out = tmp_path / "teacher"
  shutil.copytree(teacher_dir, out)
  before = folder_state(out)
  full_disk_at_save(monkeypatch)
  with pytest.raises(Exception) as raised:
    convert.convert(small_bert_hf_dir, str(out))
  assert cli.error_line(raised.value)[0].startswith(
      "no space left on device while writing %s;" % (out / "bert_model.ckpt"))
  assert folder_state(out) == before


def test_export_onto_a_full_disk_keeps_the_earlier_export(
    tmp_path, teacher_dir, monkeypatch):
  """The weights file is written through /dev/full (a real ENOSPC): one
  error line, the earlier export as it was, no temporary folder left."""
  import contextlib  # pylint: disable=g-import-not-at-top
  from bert_distill.stages import exporter  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  config = modeling.BertConfig.from_json_file(
      os.path.join(teacher_dir, "bert_config.json"))
  args = (config, os.path.join(teacher_dir, "bert_model.ckpt"),
          os.path.join(teacher_dir, "vocab.txt"))
  out = tmp_path / "exported"
  exporter.export(*args, str(out))
  before = folder_state(out)
  real = outputs.atomic_output_dir

  @contextlib.contextmanager
  def on_a_full_disk(final_dir):
    with real(final_dir) as tmp:
      os.symlink("/dev/full", os.path.join(tmp, "model.safetensors"))
      yield tmp

  monkeypatch.setattr(outputs, "atomic_output_dir", on_a_full_disk)
  with pytest.raises(Exception) as raised:
    exporter.export(*args, str(out), overwrite=True)
  message, status = cli.error_line(raised.value)
  assert status == 1 and message.startswith(
      "no space left on device while writing "), message
  assert "\n" not in message
  assert folder_state(out) == before
  assert sorted(os.listdir(tmp_path)) == ["exported"]


def test_converter_names_a_vocab_that_is_not_utf8(tmp_path,
                                                  small_bert_hf_dir):
  import shutil  # pylint: disable=g-import-not-at-top
  import convert_hf_bert_checkpoint as convert  # pylint: disable=g-import-not-at-top
  hf = tmp_path / "hf"
  shutil.copytree(small_bert_hf_dir, hf)
  (hf / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
  with pytest.raises(cli.UserError, match=r"hf/vocab\.txt: not UTF-8 text"):
    convert.read_vocab(str(hf))


# ---------------------------------------------------------------------------
# Cases 2, 3, 6, 10 and Ctrl-C: stage V's output_dir and checkpoints.
# ---------------------------------------------------------------------------


def test_one_training_run_per_output_dir(tmp_path, small_stage4):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  out.mkdir()
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4, out)
  with conftest.lock_held_elsewhere(out) as pid:
    with pytest.raises(cli.UserError, match=r"--output_dir: \S*out is in use "
                       r"by process %d on \S+ \(lock file \S*out/\.lock\)" %
                       pid):
      distillation.run(opts)
  assert (out / ".lock").exists()
  distillation.run(opts)  # the dead process's lock does not block
  assert (out / "model.ckpt-2.index").exists()
  assert not (out / ".lock").exists()


def test_no_run_writes_through_a_planted_link(tmp_path, small_stage4):
  """Security: a symbolic or hard link planted as the lock file or as a
  temporary's name never has its target written (stage V, the lock; stage
  V's eval_results.txt, a temporary named after this process)."""
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  victim = tmp_path / "victim.txt"
  victim.write_text("precious\n")
  out = tmp_path / "out"
  out.mkdir()
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4, out,
                         do_eval=True)
  (out / ".lock").symlink_to(victim)
  with pytest.raises(cli.UserError, match=(
      r"^--output_dir: the lock file \S*out/\.lock is a symbolic link \(to "
      r"\S*victim\.txt\); a run writes no lock through a link: remove it$")):
    distillation.run(opts)
  (out / ".lock").unlink()
  os.link(victim, out / ".lock")
  with pytest.raises(cli.UserError, match=(
      r"the lock file \S*out/\.lock is a hard link to another file \(2 "
      r"names\)")):
    distillation.run(opts)
  (out / ".lock").unlink()
  assert victim.read_text() == "precious\n"
  assert os.listdir(out) == []

  # The temporary of eval_results.txt, under this process's own name.
  tmp_name = outputs.temporary_name(str(out / "eval_results.txt"))
  os.symlink(victim, tmp_name)
  distillation.run(opts)
  assert victim.read_text() == "precious\n"
  assert "masked_lm_loss = " in (out / "eval_results.txt").read_text()
  assert not os.path.lexists(tmp_name)
  assert not (out / ".lock").exists()

  # A folder written whole (the exporter's): a planted link is removed,
  # not followed.
  target = tmp_path / "elsewhere"
  target.mkdir()
  final = tmp_path / "export"
  os.symlink(target, outputs.temporary_name(str(final)))
  with outputs.atomic_output_dir(str(final)) as tmp:
    with open(os.path.join(tmp, "f.txt"), "w") as f:
      f.write("x")
  assert os.listdir(target) == [] and os.listdir(final) == ["f.txt"]


def test_resume_checks_the_model_and_the_settings(tmp_path, small_stage4,
                                                  caplog):
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  two = tiny_config(tmp_path / "two.json", num_hidden_layers=2)
  distillation.run(student_options(two, small_stage4, out))
  one = tiny_config(tmp_path / "one.json", num_hidden_layers=1)
  with pytest.raises(cli.UserError, match=r"model\.ckpt-2 was written by "
                     r"another model: it holds 16 variables the student of "
                     r"--bert_config_file lacks \(e\.g\. bert/encoder/"
                     r"layer_1/"):
    distillation.run(student_options(one, small_stage4, out,
                                     num_train_steps=4))
  distillation.run(student_options(two, small_stage4, out, num_train_steps=3,
                                   train_batch_size=8, learning_rate=1e-4))
  warning = [r.getMessage() for r in caplog.records
             if "other settings" in r.getMessage()]
  assert len(warning) == 1 and ("train_batch_size 4 -> 8, learning_rate "
                                "5e-05 -> 0.0001") in warning[0], warning


def test_foreign_and_damaged_checkpoints(tmp_path, small_stage4,
                                         teacher_dir):
  from bert_distill.lib import checkpoints  # pylint: disable=g-import-not-at-top
  from bert_distill.stages import distillation  # pylint: disable=g-import-not-at-top
  from bert_distill.lib import errors  # pylint: disable=g-import-not-at-top
  import modeling  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  foreign = checkpoints.save_checkpoint(
      {"model/dense/kernel": np.zeros([3, 3], np.float32)},
      str(tmp_path / "foreign.ckpt"))
  opts = student_options(tiny_config(tmp_path / "s.json"), small_stage4,
                         tmp_path / "out", init_checkpoint=foreign)
  with pytest.raises(cli.UserError, match=r"--init_checkpoint: checkpoint "
                     r"\S*foreign\.ckpt lacks 2\d of the student's variables"):
    distillation.run(opts)
  # A teacher whose .data file was cut short (a partial download).
  import shutil  # pylint: disable=g-import-not-at-top
  cut = tmp_path / "teacher"
  shutil.copytree(teacher_dir, cut)
  data = cut / "bert_model.ckpt.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  config = modeling.BertConfig.from_json_file(str(cut / "bert_config.json"))
  model = modeling.BertPretrainingModel(config)
  with pytest.raises(errors.CheckpointError, match=r"bert_model\.ckpt\."
                     r"data-00000-of-00001 is damaged \(cut short"):
    checkpoints.load_checkpoint(model.variables_by_name(),
                             str(cut / "bert_model.ckpt"))


def test_ctrl_c_in_training_saves_a_checkpoint(tmp_path, small_stage4):
  config = tiny_config(tmp_path / "s.json")
  stop_training_with(signal.SIGINT, [
      "network_distillation_single_machine_truncated.py",
      "--bert_config_file", config, "--input_file", small_stage4,
      "--truncation_factor", K, "--max_seq_length", SEQ,
      "--max_predictions_per_seq", PREDS, "--do_train", "true",
      "--train_batch_size", 2, "--num_train_steps", 100000,
      "--num_warmup_steps", 0], tmp_path)


def stop_training_with(signum, args, tmp_path):
  """Runs a training script (`args`: the script and its flags but the
  output's and the loop's) into tmp_path/out, sends `signum` once it
  trains, and checks the stop: the current step ends, a checkpoint of that
  step is written, one last line says where, exit status 128 + signum, the
  lock is gone. One device loop of 100000 steps: the signal must not wait
  for it."""
  out = tmp_path / "out"
  log_path = tmp_path / "log"
  name = signal.Signals(signum).name
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable] + [str(a) for a in args] + [
            "--output_dir", str(out), "--iterations_per_loop", "100000",
            "--log_every_n_steps", "100000",
            "--save_checkpoints_steps", "100000"],
        cwd=REPO, env=script_env(), stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=default_sigint)
  try:
    wait_until(lambda: "Training from step 0" in log_path.read_text() or
               proc.poll() is not None, 120, "training to start")
    time.sleep(3)
    proc.send_signal(signum)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  text = log_path.read_text()
  assert proc.returncode == 128 + signum, text[-3000:]
  assert "Traceback" not in text
  m = re.search(r"^error: stopped by %s after step (\d+); checkpoint "
                r"model\.ckpt-(\d+) saved in \S+out: run the same command to "
                r"resume from it$" % name, text, re.M)
  assert m and m.group(1) == m.group(2), text[-2000:]
  step = int(m.group(1))
  assert 0 < step < 100000
  assert (out / ("model.ckpt-%d.index" % step)).exists()
  assert not (out / ".lock").exists()
  assert text.strip().splitlines()[-1] == m.group(0)
