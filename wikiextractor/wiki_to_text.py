# coding=utf-8
"""Stage II: a Wikipedia XML dump -> sentence-per-line text files.

Runs the `wikiextractor` package from PyPI on the dump (JSON output, read as
it streams out of the extractor), then, for each article:

  * drops the title (and a first text line repeating it), and drops
    articles whose text is shorter than --min_article_chars (redirects,
    disambiguation stubs);
  * splits each paragraph into sentences with blingfire (an offline
    splitter: nothing is downloaded at run time);
  * writes one sentence per line, with one blank line between articles.

Articles are never split across output files. With --num_files N each
article goes to the output file holding the fewest bytes so far, so the
files differ in size by at most one article; with --max_bytes_per_file a new
file is started when the next article would overflow the current one.
Files are named <output_prefix>_000.txt, <output_prefix>_001.txt, ...

Outputs are written in a temporary folder inside --output_dir and moved to
their final names only when the whole dump has been converted; older files
of a previous run with the same prefix are then removed, so the folder holds
exactly this run's files (stage III reads every file in it).

Example:
  python wikiextractor/wiki_to_text.py \\
      --input enwiki-latest-pages-articles.xml.bz2 \\
      --output_dir wiki_text --num_files 500 --processes 8
"""

import bz2
import gzip
import heapq
import json
import os
import re
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import blingfire

from bert_distill import cli
from bert_distill.lib import outputs
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS

flags.DEFINE_string("input", None,
                    "Wikipedia XML dump: .xml, .xml.bz2 or .xml.gz, a full "
                    "dump or one of its shards.")
flags.DEFINE_string("output_dir", None,
                    "Folder for the text files (created if needed).")
flags.DEFINE_integer("num_files", 0,
                     "Number of output files of balanced sizes. Exactly one "
                     "of --num_files and --max_bytes_per_file must be set.")
flags.DEFINE_integer("max_bytes_per_file", 0,
                     "Start a new output file when the next article would "
                     "make the current one larger than this (an article "
                     "larger than this gets a file of its own).")
flags.DEFINE_integer("processes", os.cpu_count() or 1,
                     "Extraction processes, passed to wikiextractor.")
flags.DEFINE_integer("min_article_chars", 200,
                     "Drop articles whose extracted text has fewer "
                     "characters than this (redirects, stubs).")
flags.DEFINE_string("output_prefix", "wiki",
                    "Output files are <output_prefix>_<index>.txt.")

# Most lines of stderr that wikiextractor may leave for an error message.
_STDERR_TAIL = 5


def check_dump(path):
  """Raises a `cli.UserError` unless `path` looks like a Wikipedia XML dump.

  Looks for the `<mediawiki` root element in the first kilobytes, after
  decompressing by the file's extension as wikiextractor does.
  """
  cli.require_file(path, "--input", "dump")
  with open(path, "rb") as f:
    magic = f.read(3)
  ext = os.path.splitext(path)[1]
  if magic == b"BZh" and ext != ".bz2":
    raise cli.UserError("--input: %s is bzip2-compressed; its name must end "
                        "in .bz2 (wikiextractor decompresses by extension)" %
                        path)
  if magic[:2] == b"\x1f\x8b" and ext != ".gz":
    raise cli.UserError("--input: %s is gzip-compressed; its name must end "
                        "in .gz (wikiextractor decompresses by extension)" %
                        path)
  opener = {".bz2": bz2.open, ".gz": gzip.open}.get(ext, open)
  try:
    with opener(path, "rb") as f:
      head = f.read(16384)
  except (OSError, EOFError) as exc:
    raise cli.UserError("--input: cannot read %s: %s" % (path, exc))
  if b"<mediawiki" not in head:
    raise cli.UserError("--input: %s is not a Wikipedia XML dump (no "
                        "<mediawiki> element at its start)" % path)


# Bytes read from the end of an uncompressed dump to check that it is whole.
_TAIL_BYTES = 1 << 20


def truncated_dump_page(path):
  """For a cut-off uncompressed .xml dump, the title of its last page.

  A whole dump ends with `</mediawiki>`; wikiextractor silently drops a
  last page that a cut (an interrupted download) left incomplete.
  Compressed dumps are not checked here (their decompressor fails on a cut).

  Returns:
    None if the dump ends properly (or is compressed); otherwise the title
    of the last page that starts in its last megabyte ("" if none is
    found).
  """
  if os.path.splitext(path)[1] in (".bz2", ".gz"):
    return None
  with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - _TAIL_BYTES))
    tail = f.read()
  if b"</mediawiki>" in tail[-4096:]:
    return None
  titles = re.findall(rb"<title>(.*?)</title>", tail)
  return titles[-1].decode("utf-8", "replace") if titles else ""


class _StderrRelay(threading.Thread):
  """Keeps the last lines of a child's stderr (for an error message).

  The lines are logged at debug level only (`--verbosity=1` shows them):
  wikiextractor's own progress lines are not this script's.
  """

  def __init__(self, stream):
    super(_StderrRelay, self).__init__(daemon=True)
    self._stream = stream
    self.tail = []

  def run(self):
    """Relays lines until the stream closes."""
    for line in self._stream:
      line = line.rstrip()
      if not line:
        continue
      logging.debug("wikiextractor: %s", line)
      self.tail = (self.tail + [line])[-_STDERR_TAIL:]


def extract_articles(dump, processes):
  """Yields the articles of `dump` as dicts (id, url, title, text).

  Runs wikiextractor's command line (`--json -o -`, through
  run_extractor.py so that it and its workers die with this process) and
  parses its output as it streams.

  Raises:
    cli.UserError: if wikiextractor fails.
  """
  launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "run_extractor.py")
  cmd = [sys.executable, launcher, str(os.getpid()), "--json",
         "--processes", str(processes), "-o", "-", os.path.abspath(dump)]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, encoding="utf-8",
                          cwd=os.path.dirname(os.path.abspath(dump)))
  relay = _StderrRelay(proc.stderr)
  relay.start()
  try:
    for line in proc.stdout:
      if line.strip():
        yield json.loads(line)
  except BaseException:
    proc.kill()
    raise
  finally:
    proc.stdout.close()
    proc.wait()
    relay.join()
  if proc.returncode != 0:
    raise cli.UserError("wikiextractor failed on %s (exit %d): %s" %
                        (dump, proc.returncode,
                         " | ".join(relay.tail) or "no message"))


def article_sentences(article, min_chars):
  """Sentences of one extracted article, or None if it is to be dropped.

  Args:
    article: dict with "title" and "text" (paragraphs separated by "\\n").
    min_chars: articles with less text than this are dropped.

  Returns:
    A list of sentences (whitespace normalised, no empty ones), or None.
  """
  lines = article.get("text", "").split("\n")
  title = article.get("title", "").strip()
  if lines and title and lines[0].strip() == title:
    lines = lines[1:]
  paragraphs = [p.strip() for p in lines]
  paragraphs = [p for p in paragraphs if p]
  if sum(len(p) for p in paragraphs) < min_chars:
    return None
  sentences = []
  for paragraph in paragraphs:
    for sentence in blingfire.text_to_sentences(paragraph).split("\n"):
      # One sentence per line: no line breaks of any kind inside it.
      sentence = " ".join(sentence.split())
      if sentence:
        sentences.append(sentence)
  return sentences or None


class _OutputFiles(object):
  """Writes documents into numbered files in a temporary folder.

  Documents are appended whole; per-file buffers are flushed to disk when
  they grow, so memory stays bounded whatever the number of files.
  """

  def __init__(self, tmp_dir, prefix, num_files, max_bytes):
    self.tmp_dir = tmp_dir
    self.prefix = prefix
    self.num_files = num_files
    self.max_bytes = max_bytes
    self.sizes = [0] * num_files if num_files else []
    self.docs = [0] * num_files if num_files else []
    # (bytes so far, index) of each file, to find the smallest quickly.
    self._heap = [(0, i) for i in range(num_files)]
    self._buffers = {}
    self._buffered = 0
    # Flush everything when buffers hold this many bytes in total.
    self._buffer_limit = 64 << 20

  def _path(self, index):
    return os.path.join(self.tmp_dir, "%d.part" % index)

  def add(self, sentences):
    """Appends one document (a list of sentences) to an output file."""
    data = ("\n".join(sentences) + "\n").encode("utf-8")
    if self.num_files:
      index = self._heap[0][1]
    else:
      index = len(self.sizes) - 1
      if index < 0 or (self.sizes[index] and
                       self.sizes[index] + 1 + len(data) > self.max_bytes):
        self.sizes.append(0)
        self.docs.append(0)
        index += 1
    if self.sizes[index]:
      data = b"\n" + data  # the blank line between documents
    self._buffers.setdefault(index, []).append(data)
    self._buffered += len(data)
    self.sizes[index] += len(data)
    self.docs[index] += 1
    if self.num_files:
      heapq.heapreplace(self._heap, (self.sizes[index], index))
    if self._buffered >= self._buffer_limit:
      self.flush()

  def flush(self):
    """Writes all buffered data to the part files."""
    for index, chunks in sorted(self._buffers.items()):
      with open(self._path(index), "ab") as f:
        f.write(b"".join(chunks))
    self._buffers = {}
    self._buffered = 0

  def commit(self, output_dir):
    """Moves the finished files to their final names; returns the paths.

    Files that received no document (fewer documents than --num_files) are
    not written.
    """
    self.flush()
    used = [i for i in range(len(self.sizes)) if self.docs[i]]
    width = max(3, len(str(len(used) - 1)))
    paths = []
    for number, index in enumerate(used):
      final = os.path.join(output_dir,
                           "%s_%0*d.txt" % (self.prefix, width, number))
      os.replace(self._path(index), final)
      paths.append(final)
    self.sizes = [self.sizes[i] for i in used]
    self.docs = [self.docs[i] for i in used]
    return paths


def remove_stale_outputs(output_dir, prefix, keep):
  """Removes <prefix>_<digits>.txt files of an earlier run not in `keep`."""
  pattern = re.compile(r"^%s_\d+\.txt$" % re.escape(prefix))
  keep = set(os.path.basename(p) for p in keep)
  for name in sorted(os.listdir(output_dir)):
    if pattern.match(name) and name not in keep:
      logging.warning("removing %s (left by an earlier run)", name)
      os.remove(os.path.join(output_dir, name))


def convert(dump, output_dir, num_files, max_bytes, processes, min_chars,
            prefix):
  """Converts a dump into text files in `output_dir`; returns a summary."""
  tmp_dir = outputs.temporary_name(os.path.join(output_dir, prefix))
  os.makedirs(tmp_dir)
  try:
    files = _OutputFiles(tmp_dir, prefix, num_files, max_bytes)
    progress = cli.Progress("wiki_to_text", unit="articles")
    kept = sentences = 0
    for article in extract_articles(dump, processes):
      doc = article_sentences(article, min_chars)
      if doc is not None:
        files.add(doc)
        kept += 1
        sentences += len(doc)
      progress.update(1, extra="%d kept, %d sentences" % (kept, sentences))
    cut_page = truncated_dump_page(dump)
    if cut_page is not None:
      logging.warning(
          "%s is truncated (it does not end with </mediawiki>): its last "
          "page%s is incomplete and was dropped; download the dump again "
          "for a whole one", dump, " (%r)" % cut_page if cut_page else "")
    if progress.count == 0:
      raise cli.UserError("--input: wikiextractor found no articles in %s" %
                          dump)
    if kept == 0:
      raise cli.UserError(
          "--input: none of the %d articles of %s has at least "
          "--min_article_chars=%d characters of text" %
          (progress.count, dump, min_chars))
    paths = files.commit(output_dir)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  remove_stale_outputs(output_dir, prefix, paths)
  progress.done(extra="%d kept, %d sentences" % (kept, sentences))
  return {"articles": progress.count, "kept": kept,
          "dropped": progress.count - kept, "sentences": sentences,
          "files": len(paths), "bytes": sum(files.sizes),
          "min_file_bytes": min(files.sizes),
          "max_file_bytes": max(files.sizes)}


def main(argv):
  """Checks the flags and the dump, converts it, logs a summary."""
  del argv  # cli.run rejects leftover words
  if not FLAGS.input:
    raise cli.UserError("--input is required")
  if bool(FLAGS.num_files > 0) == bool(FLAGS.max_bytes_per_file > 0):
    raise cli.UserError("set exactly one of --num_files and "
                        "--max_bytes_per_file to a positive value (got %d "
                        "and %d)" % (FLAGS.num_files, FLAGS.max_bytes_per_file))
  if FLAGS.num_files < 0 or FLAGS.max_bytes_per_file < 0:
    raise cli.UserError("--num_files and --max_bytes_per_file must not be "
                        "negative")
  if FLAGS.processes < 1:
    raise cli.UserError("--processes must be at least 1, got %d" %
                        FLAGS.processes)
  if not re.match(r"^[\w.-]+$", FLAGS.output_prefix):
    raise cli.UserError("--output_prefix must be a plain file name prefix, "
                        "got %r" % FLAGS.output_prefix)
  check_dump(FLAGS.input)
  cli.ensure_writable_dir(FLAGS.output_dir)
  summary = convert(FLAGS.input, FLAGS.output_dir, FLAGS.num_files,
                    FLAGS.max_bytes_per_file, FLAGS.processes,
                    FLAGS.min_article_chars, FLAGS.output_prefix)
  logging.info(
      "wrote %(files)d files, %(bytes)d bytes (%(min_file_bytes)d to "
      "%(max_file_bytes)d per file): %(kept)d articles (%(dropped)d of "
      "%(articles)d dropped as empty or short), %(sentences)d sentences",
      summary)
  if FLAGS.num_files and summary["kept"] < FLAGS.num_files:
    logging.warning("only %d articles for --num_files=%d: wrote %d files",
                    summary["kept"], FLAGS.num_files, summary["files"])


if __name__ == "__main__":
  flags.mark_flags_as_required(["input", "output_dir"])
  cli.run(main)
