"""Relay: one training run handed across preemptible workers on any backend, under leases.

    state.py    the commander's durable state (SQLite WAL): runs, leases with fencing epochs, checkpoint pointers
    auth.py     HMAC-SHA256 request signing (method, path, timestamp, nonce, body hash)
    server.py   the commander's HTTP service (aiohttp): `launch relay serve`
    keeper.py   the commander's loop that keeps each run staffed (relaunches through launcher.api)
    client.py   the signed HTTP client (stdlib: the agent on a node uses it)
    config.py   RelayBinding: the Job's `relay:` section; the seed's flat run.yaml fields
    worker.py   the agent's side: acquire, seed the checkpoint folder, renew, commit, finish or release
    stack.py    a stack file: commander + run + workers (`launch relay up / down / status`)
    hub.py      uploads of committed checkpoints to the Hugging Face Hub

docs/relay.md tells the whole story.
"""
