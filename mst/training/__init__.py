"""Training: the loop (`trainer`), its data (`data`), optimizers and schedules (`optim`) and
losses (`losses`)."""
