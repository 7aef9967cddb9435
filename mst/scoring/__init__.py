"""Scoring images with a loaded checkpoint: `inference` (the compiled forward and `Predictor`),
`api` (`mst.load` and its `Scorer`) and `export` (a TensorFlow SavedModel that scores without
JAX)."""
