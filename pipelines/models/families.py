"""Imports every model family so that :func:`pipelines.models.family.get_family` finds it."""

from pipelines.models import factorised, mdma_flow, mdma_gan, mpgan, voxel_grid  # noqa: F401
