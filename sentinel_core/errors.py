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
