"""Datasets held in memory as train, validation and test tensors: see :func:`load_data`."""

from gradwise.data.datasets import READERS, Source, Splits, load_data, sources

__all__ = ["READERS", "Source", "Splits", "load_data", "sources"]
