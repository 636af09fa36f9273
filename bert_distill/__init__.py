"""The code behind the scripts at the repository's top level, in three layers.

  scripts (top level)  ->  flags  ->  stages  ->  lib

- `bert_distill.flags`: the scripts' side that is not a script: each script
  family's flags, defined once (`stage_flags`, `record_flags`,
  `distillation_flags`, `finetuning_flags`, `classifier_flags`,
  `squad_flags`), and `cli`, what every script's `main` shares (one-line
  errors, output files written whole or not at all, launch under mpirun).
- `bert_distill.stages`: the work of each stage, called by its script(s):
  `pretraining_data` (III), `teacher` (IV), `distillation`,
  `distillation_objective` (V-VI), `training` (the core that V, VI and VIII
  share), `horovod_distribution` (V-VIII under mpirun), `finetuning`,
  `classifier`, `question_answering` (VIII), `exporter` (export).
- `bert_distill.lib`: libraries that know no stage and no flag: file formats
  (`record_format`, `records`, `checkpoints`, `outputs`), tasks' data (`glue`,
  `squad`), losses (`layer_losses`), `hf_bert`, `hardware`, `results`,
  `errors`.

A layer imports only from the layers to its right. `modeling.py`,
`optimization.py` and `tokenization.py` are libraries too; they stay at the
top level under the names Google's BERT gives them, so `import modeling`
works as it does with the original. `tests/test_layering.py` checks the rule.
"""
