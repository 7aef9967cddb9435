"""Evaluation on a dataset split (`evaluate`), the quality metrics (`metrics`), and the tables and
files that report them (`report`)."""
