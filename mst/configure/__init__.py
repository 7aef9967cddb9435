"""From config files and command-line overrides to the library's typed, checked values: the edge
where a ConfigDict ends. `overrides` loads a config file and applies `--config.key=value`;
`resolve` builds a training run or mst-eval's settings from it, checking every rule once. Above
training and evaluation (whose typed values it builds), below the console scripts and
experiments; `mst.config` below holds what a config means (its keys, defaults and schema)."""
