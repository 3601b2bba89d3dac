"""Exceptions a stage reports as a clear one-line error: bad input data, a directory in use."""


class DataError(ValueError):
    """An input file that does not hold what it should; the message names the file and the problem."""


class BusyError(RuntimeError):
    """A directory held by another running process; the message names the directory and the holder."""
