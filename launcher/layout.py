"""`launcher.layout`, the documented import for runners (the datapool layout and the env contract, stdlib only).
The code is launcher/node/layout.py."""
from .node.layout import *  # noqa: F401,F403
