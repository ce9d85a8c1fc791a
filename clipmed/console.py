"""Console behaviour shared by the command-line entry points (clipmed.main, clipmed.evaluate)."""

import contextlib
import logging as py_logging
import os
import sys
from collections.abc import Iterator

from absl import logging


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


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_CODE = tuple(os.path.join(_ROOT, pkg) + os.sep for pkg in ("clipmed", "input_pipeline",
                                                                 "configs"))


def _raised_by_own_code(error: BaseException) -> bool:
  """Whether the innermost frame of the traceback is clipmed's own code (a deliberate check)."""
  tb = error.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_OWN_CODE)


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
  """Turns a user mistake into one clear message and exit status 2, without a traceback.

  A user mistake is a UserError, or a ValueError / FileNotFoundError / PermissionError raised by
  clipmed's own input checks (their messages name the field or file and say what to do). Errors
  raised inside libraries keep their traceback: they are bugs to report.
  """
  from clipmed.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except (UserError, ValueError, FileNotFoundError, PermissionError) as e:
    if not isinstance(e, UserError) and not _raised_by_own_code(e):
      raise
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def print_results(workdir: str) -> None:
  """Prints DIR/results.md (the evaluation tables) to stdout."""
  path = os.path.join(workdir, "results.md")
  with open(path, encoding="utf-8") as f:
    print(f.read(), flush=True)
  print(f"(written to {path} and {os.path.join(workdir, 'results.json')})", flush=True)
