"""mst's release, in one place: the package's `__version__`, setup.py's version and the one
config.json records."""

__version__ = "0.1.0"
