"""Errors a user reads: each says what went wrong and how to fix it, in one line."""


class SentinelError(Exception):
    """Base class of every error Sentinel raises on purpose."""


class ModelNotFoundError(SentinelError):
    """Unknown model id, or the hub is out of reach and no cached copy exists."""


class GatedModelError(SentinelError):
    """The repository needs an accepted licence and a token."""


class UnsupportedModelError(SentinelError):
    """The model_type has no converter into the gated decoder."""


class UnsupportedConfigError(SentinelError):
    """A config flag the gated decoder does not implement; never silently ignored."""


class CheckpointError(SentinelError):
    """A checkpoint that does not load cleanly: missing, unused or mis-shaped weights."""


class DiskSpaceError(SentinelError):
    """Not enough free disk for a checkpoint about to be written; says how much and where."""


class RemoteCodeError(SentinelError):
    """The checkpoint needs its own Python code (trust_remote_code), which is never enabled by default."""


class InputError(SentinelError, ValueError):
    """input_ids or attention_mask that the model cannot read as given (type, shape, values)."""


class GateError(SentinelError, ValueError):
    """Gates that do not describe the model: wrong shape or device, not finite, or a pruned head's gate reopened."""


class PruneError(SentinelError, ValueError):
    """A prune plan naming layers or heads that are not there, not as integers, or leaving a layer empty."""


class DtypeError(SentinelError, ValueError):
    """A dtype the models cannot be loaded in: unknown, or not a floating-point type."""


class DeviceError(SentinelError):
    """A device that this machine does not have (or a model and its inputs on different devices)."""
