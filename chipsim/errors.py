"""Errors that chipsim reports to a user as one clear line (CLI exit code 2)."""


class ChipsimError(Exception):
    """Base class: an error whose message is complete and meant for the user."""


class ConfigError(ChipsimError):
    """A config file or override is invalid; the message names file, key path and what is allowed."""


class DataError(ChipsimError):
    """A dataset cannot be loaded; the message says where the files must be."""


class MappingError(ChipsimError):
    """A model does not fit the chip; the message says what would make it fit."""


class TrainingDiverged(ChipsimError):
    """A loss or update became NaN/Inf; the message names the layer, step and value."""


class OutputError(ChipsimError):
    """An output path cannot be used (a file where a directory must be, not writable, disk full)."""


class CheckpointError(ChipsimError):
    """A checkpoint cannot be resumed (damaged, another format version, another config); says which and why."""


def interrupt_of(exc: BaseException):
    """The KeyboardInterrupt behind ``exc``, or None.

    A Ctrl-C that lands while a numba kernel returns through the Python C API
    surfaces as ``SystemError: ... returned a result with an exception set``,
    the KeyboardInterrupt as its context: it is the same interrupt, and ends
    in the same resume hint and exit code 130."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        if not isinstance(exc, SystemError):
            return None
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
