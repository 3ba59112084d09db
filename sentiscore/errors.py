"""Typed errors. Library code raises these; only the CLI turns them into
messages and exit codes."""


class SentiscoreError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(SentiscoreError):
    """The input file or its columns cannot be used as asked."""

    exit_code = 2


class OutputError(SentiscoreError):
    """The output cannot be written where asked."""

    exit_code = 2


class ModelError(SentiscoreError):
    """A model directory is missing, incomplete, tampered with or incompatible."""

    exit_code = 2


class SettingsMismatchError(ModelError):
    """Scoring settings differ from the ones the model was trained with."""


class UsageError(SentiscoreError):
    """Options that contradict each other or make no sense."""

    exit_code = 2


class TrainingError(SentiscoreError):
    """Training data cannot produce a model (too few rows or classes...)."""

    exit_code = 2


class WorkerError(SentiscoreError):
    """A worker process died (killed, out of memory); the run stops instead of hanging."""


class RunStopped(BaseException):
    """A stop was asked for (SIGINT, SIGTERM) and honoured at a safe point
    between chunks. A BaseException, like KeyboardInterrupt, so cleanup code
    runs and ``except Exception`` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
