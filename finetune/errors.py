"""The exceptions that mean "the user's input is wrong": printed as one message, exit status 2.

Every such exception derives from `UserError` (directly, or through a module's own class such
as RecipeError or DataError), so the CLI catches one class and imports nothing heavy to do so.
`Interrupted` is the stop a signal asks for (exit status 130), not an error.
"""


class UserError(ValueError):
    """A problem in what the user gave (file, key, row, path); str() is the whole message."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; rerunning resumes."""
