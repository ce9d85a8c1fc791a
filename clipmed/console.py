"""Console behaviour shared by the command-line entry points (clipmed.main, clipmed.evaluate)."""

import contextlib
import logging as py_logging
import os
import sys
from collections.abc import Iterator



class _QuietLibraries(py_logging.Filter):
  """Drops INFO chatter of Orbax and TFDS (dozens of lines per checkpoint); keeps warnings."""

  _NOISY = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorflow_datasets{os.sep}")

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in self._NOISY)


def quiet_library_logs() -> None:
  """Installs the filter on the absl handlers (call inside absl.app.run's main)."""
  for logger in (py_logging.getLogger("absl"), py_logging.getLogger()):
    logger.addFilter(_QuietLibraries())
    for handler in logger.handlers:
      handler.addFilter(_QuietLibraries())


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
  """Turns a user mistake (a clipmed.errors.UserError) into one line on stderr and exit status 2.

  UserErrors are raised on purpose where input is checked; their messages name the field or file
  and say what to do. Every other exception keeps its traceback: it is a bug to report.
  """
  from clipmed.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def print_results(workdir: str) -> None:
  """Prints DIR/results.md (the evaluation tables) to stdout."""
  path = os.path.join(workdir, "results.md")
  with open(path, encoding="utf-8") as f:
    print(f.read(), flush=True)
  print(f"(written to {path} and {os.path.join(workdir, 'results.json')})", flush=True)
