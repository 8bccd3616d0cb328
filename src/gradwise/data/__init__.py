"""Datasets held in memory as train, validation and test tensors: see :func:`load_data`."""

from gradwise.data.datasets import SOURCES, Splits, load_data

__all__ = ["SOURCES", "Splits", "load_data"]
