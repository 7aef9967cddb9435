"""Checkpoints of both kinds: Google's official `.npz` files (`npz`, with the model they hold read
by `architecture`) and `mst-train` workdirs (`workdirs`); `loader` decides which a path is."""
