"""The local backend: the agent as a subprocess on this machine (backend.py)."""
from ..entry import BackendEntry

ENTRY = BackendEntry(name="local", cls="launcher.backends.local.backend:LocalBackend", summary="this machine")
