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
