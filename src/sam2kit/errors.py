"""The errors every layer of sam2kit raises, at the bottom so that any layer can raise them and
any front end can present them (the command line as one line and exit status 2, the server as a
4xx with the message), without the library importing a front end.

Every message names the problem and the fix ("checkpoint file 'x.pt' does not exist; check the
path, or leave --checkpoint out to download the official weights").
"""

from __future__ import annotations


class Sam2kitError(Exception):
    """The base of sam2kit's own errors."""


class InputError(Sam2kitError):
    """A problem with the user's input or environment that the user can fix: the message names
    the problem and the fix. The command line prints it as one line and exits with status 2;
    the server answers 4xx with it."""


class ImageReadError(InputError, ValueError):
    """A picture that cannot be used; the message names the problem and the fix."""


class DatasetError(InputError, ValueError):
    """A dataset or prediction folder that is not as expected; the message names the fix."""


class ManifestError(InputError, ValueError):
    """Batch inputs that name nothing, clash, or a malformed manifest (the message says which)."""


class CheckpointNotFoundError(Sam2kitError, FileNotFoundError):
    """No checkpoint could be found or fetched; the message says how to get one."""


class CheckpointError(Sam2kitError, RuntimeError):
    """A checkpoint file exists but cannot be used; the message names the cause."""


class SpillLimitError(Sam2kitError, RuntimeError):
    """A video session's spill folder would grow past its disk budget."""


class StreamError(Sam2kitError, RuntimeError):
    """A live source broke or stalled; ``stalled`` is True for a stall (no frame in time)."""

    def __init__(self, message: str, stalled: bool = False):
        super().__init__(message)
        self.stalled = stalled


class StorageError(Sam2kitError):
    """A URL that cannot be opened (unknown scheme, driver not installed), or an output that
    another driver is writing."""
