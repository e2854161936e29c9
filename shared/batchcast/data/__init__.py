"""Data services: validating uploads, the catalog of partitions, reading datasets, storage helpers."""
