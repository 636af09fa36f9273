"""The flags of the distillation scripts (stages V and VI), defined once.

network_distillation_single_machine_truncated.py and
network_distillation_distributed_truncated.py import this module: the flags
are defined here at import, as the original scripts defined theirs, and are
the one source of every setting and its default.
stage_flags.options_from_flags turns their values into the
`distillation.Options` (OPTIONS) the training loop reads: one field per
flag, the TPU flags of stage_flags.py aside; tests/test_flags.py checks that
the two stay in step.
"""

from absl import flags

from bert_distill.stages import distillation
from bert_distill.flags import layer_loss_flags
from bert_distill.flags import record_flags
from bert_distill.flags import stage_flags

FLAGS = flags.FLAGS

# Flags of the original scripts, with the original defaults.
flags.DEFINE_string(
    "bert_config_file", None,
    "The config json file of the student BERT model. This specifies the "
    "model architecture.")
flags.DEFINE_string(
    "input_file", None,
    "Input TFRecord files (a glob or comma-separated list) written by "
    "produce_teacher_labels.py (stage IV), or by create_pretraining_data.py "
    "(stage III) when the teacher runs online.")
flags.DEFINE_string(
    "output_dir", None,
    "The output directory where the model checkpoints, eval_results.txt "
    "and TensorBoard events will be written. A run resumes from the newest "
    "checkpoint found here.")
flags.DEFINE_string(
    "init_checkpoint", None,
    "Initial checkpoint of the student (Google's variable names). Ignored "
    "when output_dir already holds a checkpoint to resume from.")
flags.DEFINE_integer(
    "truncation_factor", 10,
    "K: number of the teacher's most probable words stored per masked "
    "position (features truncated_masked_lm_probs and top_k_indices). 0: "
    "the teacher's whole distribution (feature masked_lm_probs).")
flags.adopt_module_key_flags(record_flags)  # list them in --help
flags.DEFINE_bool("do_train", False, "Whether to run training.")
flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
flags.DEFINE_integer("train_batch_size", 32, "Batch size for training.")
flags.DEFINE_integer("eval_batch_size", 8, "Batch size for eval.")
flags.DEFINE_float("learning_rate", 5e-5,
                   "The initial learning rate for Adam.")
flags.DEFINE_integer("num_train_steps", 100000, "Number of training steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Number of warmup steps.")
flags.DEFINE_integer("save_checkpoints_steps", 1000,
                     "How often to save the model checkpoint.")
flags.DEFINE_integer(
    "iterations_per_loop", 1000,
    "How many steps run inside one device loop (one tf.function call) "
    "before control returns to Python. Loops also end at logging and "
    "checkpoint steps.")
flags.DEFINE_integer("max_eval_steps", 100, "Maximum number of eval steps.")

# Options beyond the original; the defaults keep the original's behaviour.
flags.DEFINE_string(
    "eval_input_file", None,
    "Held-out records for --do_eval (glob or comma list). Default: "
    "--input_file, as the original (which evaluated on its training data).")
flags.DEFINE_float(
    "temperature", 1.0,
    "Distillation temperature T: the student's logits are divided by T, "
    "the teacher's probabilities raised to 1/T and renormalised over the "
    "stored entries, and the soft loss multiplied by T^2 (Hinton et al.). "
    "1: the original's loss.")
flags.DEFINE_float(
    "soft_label_weight", 1.0,
    "Weight of the soft cross-entropy on the teacher's labels (1: the "
    "original's loss). 0 with --hard_label_weight > 0 and no online "
    "teacher: plain masked-LM training on the true ids of stage-III "
    "records, no teacher at all (to adapt a teacher to your text before "
    "labelling, or to pre-train a student without one, the baseline that "
    "distillation must beat).")
flags.DEFINE_float(
    "hard_label_weight", 0.0,
    "Weight of the ordinary masked-LM cross-entropy on the true ids "
    "(masked_lm_ids) added to the soft loss. 0: soft labels only, as the "
    "original.")
flags.DEFINE_bool(
    "renormalize_top_k", False,
    "Rescale the teacher's K stored probabilities to sum to 1 at each "
    "position. Off: the original (the truncated mass is left out).")
flags.DEFINE_string(
    "teacher_bert_config_file", None,
    "Online teacher: the teacher's bert_config.json. With "
    "--teacher_init_checkpoint, the teacher runs inside each training step "
    "on stage-III records (no stage-IV files needed).")
flags.DEFINE_string(
    "teacher_init_checkpoint", None,
    "The teacher's checkpoint, for the online teacher and for "
    "--init_from_teacher_layers.")
flags.DEFINE_enum(
    "teacher_compute_dtype", "float32", ["float32", "bfloat16"],
    "Compute type of the online teacher: bfloat16 runs it in bfloat16 "
    "(softmax and top-K in float32), faster on hardware with bfloat16 "
    "units (as produce_teacher_labels.py --compute_dtype).")
flags.DEFINE_string(
    "init_from_teacher_layers", None,
    "Comma-separated teacher layer indices, one per student layer (e.g. "
    "\"0,2,4,6,8,10\"): student layer i starts as teacher layer "
    "indices[i], and the embeddings, pooler and heads are copied from the "
    "teacher (as DistilBERT does). Needs --teacher_init_checkpoint and "
    "matching sizes.")
flags.DEFINE_bool("use_xla", False,
                  "Compile the forward and backward pass with XLA.")
flags.DEFINE_bool(
    "use_mixed_precision", False,
    "Compute in --mixed_precision_dtype, keeping float32 variables "
    "(for GPUs).")
flags.DEFINE_enum(
    "mixed_precision_dtype", "float16", ["float16", "bfloat16"],
    "Compute type with --use_mixed_precision. float16 uses dynamic loss "
    "scaling.")
flags.DEFINE_integer("log_every_n_steps", 100,
                     "Log a progress line (step, loss, learning rate, "
                     "examples/s, ETA) every this many steps.")
flags.DEFINE_integer(
    "random_seed", 12345,
    "Seed of the initialisation, the data order and the dropout masks. A "
    "run restarted from its checkpoint with the same seed gives the same "
    "result as an uninterrupted run.")
flags.DEFINE_integer(
    "shuffle_buffer", 10000,
    "Training records held in the shuffle buffer. The original used 100, "
    "behind an interleave of 4 files; here each Horovod rank reads its "
    "share of the records in file order (which keeps the shares "
    "disjoint), so 100 would feed a rank one file at a time, and 10000 "
    "mixes records from across its files as the original's interleave "
    "did. Memory: the buffer holds serialized records, about 2 KB each "
    "with --truncation_factor=10 but max_predictions_per_seq * vocab_size "
    "* 4 bytes (2.4 MB for BERT-Base) with --truncation_factor=0: lower it "
    "then (--shuffle_buffer=100 is the original's).")
flags.DEFINE_integer("keep_checkpoint_max", 5,
                     "How many recent checkpoints to keep in output_dir.")
flags.DEFINE_bool(
    "eval_untrained", False,
    "With --do_train=false and no checkpoint in --output_dir nor "
    "--init_checkpoint: evaluate the student's random initialisation (a "
    "baseline). Without this flag that is an error, the sign of a "
    "mistyped --output_dir.")
flags.DEFINE_bool(
    "check_inputs", True,
    "With --do_train and --do_eval: read every record of the eval files "
    "(framing and checksums) before training starts, so that a damaged "
    "eval file stops the run before training instead of after it (0.12 s "
    "for the 15 MB, 6848-record held-out file of the demo on a CPU "
    "core).")

flags.adopt_module_key_flags(stage_flags)  # list them in --help
flags.adopt_module_key_flags(layer_loss_flags)

# What these flags fill (stage_flags.options_from_flags).
OPTIONS = distillation.Options
