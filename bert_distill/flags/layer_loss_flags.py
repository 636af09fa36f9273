"""The layer-wise distillation losses' flags, defined once.

Shared by the distillation scripts (stages V and VI, through
distillation_flags.py, with the online teacher) and the fine-tuning scripts
(stage VIII, through finetuning_flags.py, with a fine-tuned teacher): both
run the teacher in the training step and compare its insides with the
student's (bert_distill/lib/layer_losses.py). The values are the fields of
`layer_losses.LayerLossSettings`.
"""

from absl import flags

flags.DEFINE_float(
    "hidden_loss_weight", 0.0,
    "Weight of the TinyBERT hidden-state loss: mean squared error between "
    "the student's embeddings and layer outputs and the mapped teacher "
    "ones (see --teacher_layer_map), through a learned linear projection "
    "when the widths differ. Needs a teacher run in the training step. "
    "0: off.")
flags.DEFINE_float(
    "attention_loss_weight", 0.0,
    "Weight of the TinyBERT attention loss: mean squared error between the "
    "student's pre-softmax attention scores and the mapped teacher layer's, "
    "head by head, padding excluded. Needs a teacher run in the training "
    "step and the same number of heads. 0: off.")
flags.DEFINE_float(
    "attention_relation_loss_weight", 0.0,
    "Weight of the MiniLMv2 attention-relation loss: KL divergence between "
    "the teacher's and the student's query-query, key-key and value-value "
    "relations (--attention_relation_heads heads) of teacher layer "
    "--attention_relation_teacher_layer and the student's last layer. Any "
    "widths and head counts. Needs a teacher run in the training step. 0: off.")
flags.DEFINE_string(
    "teacher_layer_map", None,
    "For --hidden_loss_weight and --attention_loss_weight: comma-separated "
    "0-based teacher layer indices, one per student layer (student layer i "
    "is compared with teacher layer indices[i]; the embeddings with the "
    "embeddings). Default: uniform, student layer i <- teacher layer "
    "(i + 1) * L_teacher / L_student - 1, e.g. 1,3,5,7,9,11 for 6 of 12.")
flags.DEFINE_integer(
    "attention_relation_teacher_layer", -1,
    "The teacher layer (0-based; negative counts from the end, -1 the "
    "last) whose relations --attention_relation_loss_weight distils into "
    "the student's last layer.")
flags.DEFINE_integer(
    "attention_relation_heads", 0,
    "Number of relation heads of --attention_relation_loss_weight; must "
    "divide both hidden sizes. 0: the teacher's num_attention_heads.")
