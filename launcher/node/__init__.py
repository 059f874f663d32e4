"""What runs on the machine: the node bootstrap (bootstrap.py renders it), the agent (agent.py), job control from
a state dir (nodectl.py), the multi-node side (multinode.py) and the datapool layout and env contract every runner
reads (layout.py). Stdlib only at import: the node runs this before anything is installed."""
