"""Scoring images with a loaded checkpoint: `inference` (the compiled forward and `Predictor`),
`api` (`mst.load` and its `Scorer`), `traced_cache` (traced programs and parameter shapes kept
between processes) and `export` (a TensorFlow SavedModel that scores without JAX)."""
