"""The commander: an HTTP service (aiohttp) over the durable state, plus the keeper that keeps each run staffed.

    launch relay serve --host 0.0.0.0 --port 8765 --state-path ~/.launcher/relay/state.db --shared-secret-file F

Every route is signed (see auth.py) and answers JSON. A refused signature is 401 with one log line and touches
nothing but the nonce table (and only for a valid signature: a forged request cannot fill it).
"""
from __future__ import annotations

import json
import logging
import sys

from .auth import check
from .state import Refused, RelayState

log = logging.getLogger("launcher.relay")


def make_app(state: RelayState, secret: str, *, keeper=None):
    from aiohttp import web

    @web.middleware
    async def authenticate(request, handler):
        body = await request.read()
        why, nonce = check(secret, request.method, request.path_qs, request.headers, body)
        if why is None and not state.first_use(nonce):
            why = "replayed nonce"
        if why is not None:
            log.warning("refused %s %s from %s: %s", request.method, request.path_qs, request.remote, why)
            return web.json_response({"error": f"unauthorized: {why}"}, status=401)
        try:
            return await handler(request)
        except Refused as exc:
            return web.json_response({"error": exc.message, **exc.extra}, status=exc.status)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)

    async def payload(request) -> dict:
        raw = await request.read()
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    def run_id(request) -> str:
        return request.match_info["run"]

    async def health(request):
        return web.json_response({"ok": True, "runs": len(state.runs())})

    def full_view(run: str, events: int) -> dict:
        view = state.view(run)
        view["events"] = state.events(run, limit=events)
        # The workers' job records, so `launch relay up/status/down` can copy them into the caller's registry.
        view["worker_records"] = {w["job_id"]: w["record"] for w in state.workers(run)}
        return view

    async def list_runs(request):
        events = int(request.query.get("events", 50))
        return web.json_response({"runs": [full_view(r, events) for r in state.runs()]})

    async def register(request):
        data = await payload(request)
        return web.json_response(state.register(str(data["run_id"]), dict(data.get("config") or {}),
                                                float(data.get("ttl", 60))))

    async def show(request):
        return web.json_response(full_view(run_id(request), int(request.query.get("events", 50))))

    async def acquire(request):
        data = await payload(request)
        return web.json_response(state.acquire(run_id(request), str(data["worker"])).to_dict())

    async def renew(request):
        data = await payload(request)
        return web.json_response(state.renew(run_id(request), str(data["worker"]), int(data["epoch"])).to_dict())

    async def release(request):
        data = await payload(request)
        state.release(run_id(request), str(data["worker"]), int(data["epoch"]))
        return web.json_response({"released": True})

    async def commit(request):
        data = await payload(request)
        step = data.get("step")
        return web.json_response(state.commit(run_id(request), str(data["worker"]), int(data["epoch"]),
                                              str(data["checkpoint"]), None if step is None else int(step)))

    async def finish(request):
        data = await payload(request)
        state.finish(run_id(request), str(data["worker"]), int(data["epoch"]))
        return web.json_response({"finished": True})

    async def close(request):
        """`launch relay down`: the run is over whoever holds it; the keeper launches nothing more for it."""
        data = await payload(request)
        view = state.view(run_id(request))
        if not view["finished"]:
            state.finish(run_id(request), "relay-down", view["epoch"])
        state.event(run_id(request), "closed", why=str(data.get("why", "launch relay down")))
        return web.json_response(state.view(run_id(request)))

    async def add_worker(request):
        data = await payload(request)
        entry = data.get("entry")
        state.add_worker(run_id(request), str(data["job_id"]), str(data["backend"]),
                         None if entry is None else int(entry), data.get("record"))
        return web.json_response({"added": data["job_id"]})

    app = web.Application(middlewares=[authenticate], client_max_size=1 << 20)
    app.add_routes([
        web.get("/v1/health", health),
        web.get("/v1/runs", list_runs),
        web.post("/v1/runs", register),
        web.get("/v1/runs/{run}", show),
        web.post("/v1/runs/{run}/acquire", acquire),
        web.post("/v1/runs/{run}/renew", renew),
        web.post("/v1/runs/{run}/release", release),
        web.post("/v1/runs/{run}/commit", commit),
        web.post("/v1/runs/{run}/finish", finish),
        web.post("/v1/runs/{run}/close", close),
        web.post("/v1/runs/{run}/workers", add_worker),
    ])
    if keeper is not None:
        async def start_keeper(app):
            keeper.start()

        async def stop_keeper(app):
            keeper.stop()

        app.on_startup.append(start_keeper)
        app.on_cleanup.append(stop_keeper)
    return app


def serve(host: str, port: int, state_path: str, secret: str, *, tls_cert: str | None = None,
          tls_key: str | None = None, keep_every: float = 5.0) -> None:
    """Runs until SIGTERM / SIGINT. The keeper (relaunches) runs beside the HTTP loop in its own thread."""
    import os

    from aiohttp import web

    from .auth import SECRET_ENV
    from .keeper import Keeper

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s relay: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Replacement workers get the secret by name, like any job secret: the value stays in this process.
    os.environ[SECRET_ENV] = secret
    state = RelayState(state_path)
    ssl_context = None
    if tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls_cert, tls_key)
    keeper = Keeper(state, every=keep_every)
    app = make_app(state, secret, keeper=keeper)
    scheme = "https" if ssl_context else "http"
    log.info("commander on %s://%s:%d, state %s", scheme, host, port, state.path)
    web.run_app(app, host=host, port=port, ssl_context=ssl_context, print=None, access_log=None,
                handle_signals=True)

