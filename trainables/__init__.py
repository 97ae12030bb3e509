"""Framework-free core: data ingest, data sets, models, the training loop and metrics.

No module here imports Ray except ``trainables.tune_adapter``, the one thin adapter between Tune
and the training loop (``tests/test_train.py`` enforces it).
"""
