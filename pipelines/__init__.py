"""Point-cloud generative models for calorimeter showers and jets: the library behind the workflow."""

__version__ = "0.1.0"
