"""The project's error types: mistakes a user can fix, reported in one line.

Every error a user can fix (a missing or malformed file, records that do not
fit the reading stage, a checkpoint that does not fit the model, a flag out
of range) is an `Error`. Library modules raise the subclasses below with a
message naming the file and what was expected, never a command-line flag;
the scripts and stage modules add the flag (`cli.blame_flag`) or raise
`UserError` themselves. `cli.run` prints an `Error` as one `error:` line and
exits with status 1; any other exception is a bug and keeps its traceback.

The library errors also derive from ValueError, which is what they were
before this module existed, so `except ValueError` still catches them.
"""


class Error(Exception):
  """Base of every error a user can fix: one line, exit status 1."""


class UserError(Error):
  """Bad flags or inputs, found by a script or stage (names the flag)."""


class ConfigError(Error, ValueError):
  """A BERT config that is missing, not JSON or not a valid config."""


class CheckpointError(Error, ValueError):
  """A checkpoint that is missing, unreadable or does not fit the model."""


class RecordMismatchError(Error, ValueError):
  """Records whose features disagree with what the reading stage expects."""


class StageThreeRecordsError(RecordMismatchError):
  """Stage-III records where stage-IV records (teacher labels) were expected."""


class DamagedFileError(Error, ValueError):
  """A TFRecord file that is cut short or fails its checksums."""


class InputError(Error, ValueError):
  """An input text, vocabulary or task file that cannot be used."""


class OutputError(Error):
  """An output that cannot be written under its name (a folder stands where
  a file goes)."""


class UnsafeOutputError(OutputError):
  """An output path where writing would go through a link into another file
  (a symbolic link, or a file with other hard links, under a name a run
  writes)."""
