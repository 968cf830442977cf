"""The reading side of the replay store (DuckDB over the Parquet files)."""
