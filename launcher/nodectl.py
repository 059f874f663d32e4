"""Kept for nodes started before the move to launcher/node/: a client runs `python -m launcher.nodectl` with the
node's own copy of the code on the PYTHONPATH, old or new. The code is launcher/node/nodectl.py."""
from .node.nodectl import *  # noqa: F401,F403
from .node.nodectl import main

if __name__ == "__main__":
    raise SystemExit(main())
