"""The error type for user mistakes (bad config value, wrong path, unreadable input).

clipmed.main prints these as one clear message and exits with status 2, instead of a traceback.
"""


class UserError(Exception):
  """A mistake the user can fix; the message names the file/field and says what to do."""
