"""Streaming loader: shards -> epoch-seeded order -> rank/worker split -> sampled items -> fixed-shape batches."""

from pipeline.errors import StreamError
from pipeline.stream.config import DatasetSpec, StreamConfig
from pipeline.stream.dataset import HandStream
from pipeline.stream.loader import StreamLoader

__all__ = ["DatasetSpec", "HandStream", "StreamConfig", "StreamError", "StreamLoader"]
