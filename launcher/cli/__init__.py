"""The `launch` command line, one module per command (app.py: the group and `main`)."""
from .app import cli, main

__all__ = ["cli", "main"]
