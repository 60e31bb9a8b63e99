"""The sharder: official dataset folders -> WebDataset tar shards + Parquet manifest (docs/design.md §2)."""
