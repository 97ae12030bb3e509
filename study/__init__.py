"""The command line and the wiring to Ray: ``python -m study.run --space NAME``."""
