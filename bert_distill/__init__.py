"""The code behind the scripts at the repository's top level, in layers.

  scripts (top level) -> flags -> stages -> cli -> lib

- `bert_distill.flags`: each script family's flags, defined once
  (`stage_flags` for what every training script has, `record_flags`,
  `distillation_flags`, `finetuning_flags`, `classifier_flags`,
  `squad_flags`); a script imports its family's module, which fills the
  stage's options dataclass from the command line.
- `bert_distill.stages`: the work of each stage, called by its script(s):
  `pretraining_data` (III), `teacher` (IV), `distillation` and
  `distillation_objective` (V-VI), `finetuning`, `classifier`,
  `question_answering` (VIII), `exporter` (export); `training` is the core
  that V, VI and VIII share, `horovod_distribution` what they do under
  mpirun.
- `bert_distill.cli`: what scripts and stages share to run as commands: an
  error as one line naming the flag to fix, input and output files checked
  (an output is written whole or not at all), progress lines, signals.
- `bert_distill.lib`: libraries that know no stage and no flag: file
  formats (`record_format`, `records`, `checkpoints`, `outputs`), tasks'
  data (`glue`, `squad`), layer-wise losses (`layer_losses`), `hf_bert`,
  `hardware`, `results`, `errors`.

A module imports only from its own layer and the layers to its right.
`modeling.py`, `optimization.py` and `tokenization.py` belong to `lib` but
stay at the top level under the names Google's BERT gives them, so that
`import modeling` works as with the original. tests/test_layering.py checks
all of this.
"""
