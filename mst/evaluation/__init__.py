"""Evaluation on a dataset split (`evaluate`), the quality metrics (`metrics`), and the tables,
files and report.html that report them (`report`, `cross_dataset`, `html_report`)."""
