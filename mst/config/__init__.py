"""Configs: every key and its default (`defaults`), config files loaded by path with
`--config.KEY=VALUE` overrides (`overrides`), and the typed configs and checks of a run
(`resolve`)."""
