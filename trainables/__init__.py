"""Framework-free core: data ingest, models, the training loop and metrics (no Ray here)."""
