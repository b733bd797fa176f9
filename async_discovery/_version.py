"""The package version (read by the build and by ``async-discovery --version``)."""

__version__ = "0.1.0"
