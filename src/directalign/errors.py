"""Errors meant for users: caught once in the CLI and printed in one or two lines (tracebacks with --debug)."""


class DirectAlignError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class DataError(DirectAlignError):
    """A data file or row that cannot be used; the message names the file, row and field."""


class ConfigError(DirectAlignError):
    """A configuration key or value that is not valid; the message suggests the closest valid key."""


class TrainingError(DirectAlignError):
    """A run that cannot go on (non-finite loss, a checkpoint that does not match the config)."""


class RunInterrupted(DirectAlignError):
    """SIGINT or SIGTERM: a checkpoint was written at the step boundary; rerunning the command resumes."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
