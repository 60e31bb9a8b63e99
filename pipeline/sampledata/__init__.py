"""Sample data in the official layouts, generated procedurally (tests and `make shards` use it)."""

from pipeline.sampledata.layouts import generate

__all__ = ["generate"]
