"""Exceptions for bad input data."""


class DataError(ValueError):
    """An input file that does not hold what it should; the message names the file and the problem."""
