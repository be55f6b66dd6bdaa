"""One exception type for every problem a user can fix (bad file, bad argument, diverging run).

The CLI turns a `DigitlabError` into one readable line and exit status 2; library users catch it
like any other exception. Each message names the problem *and* the fix.
"""


class DigitlabError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class DataError(DigitlabError, ValueError):
    """A data file is missing, corrupt or inconsistent."""


class ModelFileError(DigitlabError, ValueError):
    """A model file is not a digitlab model, or of an unsupported format version."""


class TrainingDiverged(DigitlabError, FloatingPointError):
    """The loss became NaN/inf or exploded; the message carries advice."""
