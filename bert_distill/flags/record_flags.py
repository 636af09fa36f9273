"""The record-length flags of stages IV to VI, defined once, at import.

Stages IV to VI read records whose lengths stage III fixed; these flags say
what a reader expects, and the files are checked against them. A script
that imports this module lists them in its --help with
`flags.adopt_module_key_flags(record_flags)`.
"""

from absl import flags

flags.DEFINE_integer(
    "max_seq_length", 128,
    "The maximum total input sequence length after WordPiece tokenization. "
    "Must match data generation.")
flags.DEFINE_integer(
    "max_predictions_per_seq", 20,
    "Maximum number of masked LM predictions per sequence. Must match data "
    "generation.")
