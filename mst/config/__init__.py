"""What a config means: every key and its default (`defaults`), the typed model and preprocessing
a config describes (`model`), and the schema a workdir's config.json is stamped and read with
(`schema`). Loading config files and resolving them into a run is `mst.configure`'s."""
