"""The Modal calls (the `modal` client, imported here only): submit a job, read its call, stream its app's logs,
cancel it, stop apps, find expired ones. Each function does one thing the backend needs.

The client validates nothing offline (a GPU string, a secret name): request.py checks what can be checked before
any call, and every error Modal answers with that the user can fix becomes one UserError line here.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from ...errors import UserError
from ...plan import Plan
from ..slots import fill
from . import request

TOKEN_HELP = "run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"


@contextmanager
def user_errors(doing: str):
    """Modal's answers that name something the user can fix -> one line; anything else goes up unchanged."""
    import modal.exception as mx

    try:
        yield
    except mx.AuthError as exc:
        raise UserError(f"Modal refused the credentials while {doing} ({_first_line(exc)}): {TOKEN_HELP}") from None
    except mx.NotFoundError as exc:
        raise UserError(f"Modal: {_first_line(exc)} (while {doing}); create it first, e.g. "
                        "`modal secret create NAME KEY=VALUE` for a secret in the modal: profile section") from None
    except mx.InvalidError as exc:
        raise UserError(f"Modal rejected the request while {doing}: {_first_line(exc)}") from None
    except mx.ResourceExhaustedError as exc:
        raise UserError(f"Modal: {_first_line(exc)} (while {doing}); check your workspace's GPU and "
                        "concurrency limits") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_token() -> None:
    """Preflight: credentials exist and the server accepts them (one hello), before anything is recorded."""
    import modal
    import modal.exception as mx

    try:
        modal.Client.from_env().hello()
    except mx.AuthError as exc:
        raise UserError(f"no usable Modal token ({_first_line(exc)}): {TOKEN_HELP}") from None
    except mx.ConnectionError as exc:
        raise UserError(f"cannot reach Modal ({_first_line(exc)}): check your network or MODAL_SERVER_URL") from None


def _node_body():
    """run_node, sent by value: the container has no launcher package until the snapshot is unpacked."""
    from modal._vendor import cloudpickle

    from . import node

    cloudpickle.register_pickle_by_value(node)
    return node.run_node


def slot_values(plan: Plan, now: float) -> dict:
    """What fills the slots of the plan's function spec (request.py lists them), at submit (`now`)."""
    import os

    values = {"timeout": request.timeout_s(plan, now), "snapshot_file": str(plan.snapshot.path)}
    values.update({request.secret_slot(n): os.environ[n] for n in plan.job.secrets})  # api checked they are set
    return values


def build(spec: dict):
    """The real client objects for a function spec with its slots filled, offline (a Modal object is a recipe
    until an app runs it): returns (app, function). Everything comes from `spec`."""
    import modal

    from .image import node_image

    fn_spec = spec["function"]
    app = modal.App(spec["app"]["name"], tags=spec["app"]["tags"])
    image = node_image(spec=spec["image"])
    for m in fn_spec["mounts"]:
        image = image.add_local_file(m["local"], m["remote"], copy=m["copy"])
    secrets = []
    for s in fn_spec["secrets"]:
        if "from_dict" in s:
            secrets.append(modal.Secret.from_dict(s["from_dict"]))
        else:
            secrets.append(modal.Secret.from_name(s["from_name"]))
    volumes = {path: modal.Volume.from_name(v["volume"], create_if_missing=v["create_if_missing"])
               for path, v in fn_spec["volumes"].items()}
    options = {k: fn_spec[k] for k in ("gpu", "cpu", "memory", "ephemeral_disk") if k in fn_spec}
    retries = modal.Retries(max_retries=fn_spec["retries"], initial_delay=1.0) if fn_spec["retries"] else None
    fn = app.function(image=image, serialized=True, name=fn_spec["name"], timeout=fn_spec["timeout"],
                      retries=retries, nonpreemptible=fn_spec["nonpreemptible"], secrets=secrets, volumes=volumes,
                      **options)(_node_body())
    return app, fn


def check_named_secrets(plan: Plan) -> None:
    """Preflight: every Modal Secret named in the modal: section exists, before an app is made for the job."""
    import modal

    modal_opts = plan.job.modal
    for name in (modal_opts.secrets if modal_opts else []):
        with user_errors(f"looking up Modal secret {name}"):
            modal.Secret.from_name(name).hydrate()


def submit(plan: Plan) -> dict:
    """One detached app per job, one function, one spawned call: the plan's spec with its slots filled (the timeout
    counts from now); returns the handle's data."""
    spec = fill(plan.request, slot_values(plan, time.time()))
    app, fn = build(spec)
    with user_errors(f"starting app {plan.job_id}"):
        # detach: the app (and the job) outlives this process, a closed laptop lid included.
        with app.run(detach=True):
            call = fn.spawn(**spec["spawn"])
    return {"app_id": app.app_id, "call_id": call.object_id}


def call_result(call_id: str) -> tuple[str, int | None, str | None]:
    """The function call's own view: ('running', None, None) until it returns, then how it ended."""
    import modal
    import modal.exception as mx

    call = modal.FunctionCall.from_id(call_id)
    try:
        rc = call.get(timeout=0)
    except (TimeoutError, mx.OutputExpiredError) as exc:
        if isinstance(exc, mx.OutputExpiredError):
            return "lost", None, f"function call {call_id} has no output any more (expired)"
        return "running", None, None
    except mx.FunctionTimeoutError:
        return "timeout", None, f"function call {call_id} reached Modal's timeout (the dead-man switch)"
    except Exception as exc:  # noqa: BLE001 - the container died or the call was terminated
        return "lost", None, f"function call {call_id} ended without a result: {_first_line(exc)}"
    return "exited", int(rc) if rc is not None else None, None


def _blocking(fn):
    from modal._utils.async_utils import synchronize_api

    return synchronize_api(fn)


async def _app_logs(app_id: str, follow: bool, poll_s: float):
    """The job's output as Modal streams the app's logs (AppGetLogs), from the start; with follow, until the app
    is done."""
    from modal.client import _Client
    from modal_proto import api_pb2

    client = await _Client.from_env()
    last = ""
    while True:
        req = api_pb2.AppGetLogsRequest(app_id=app_id, timeout=poll_s if follow else 0, last_entry_id=last)
        done = False
        async for batch in client._stub.AppGetLogs.unary_stream(req):
            if batch.entry_id:
                last = batch.entry_id
            if batch.app_done:
                done = True
                break
            for item in batch.items:
                # stdout is the agent's output (the job's); stderr carries the bootstrap's steps, for Modal's
                # dashboard (a setup failure reaches `launch status` through result.json).
                if item.data and item.file_descriptor == api_pb2.FILE_DESCRIPTOR_STDOUT:
                    yield item.data.encode()
        if done or not follow:
            return


def app_logs(app_id: str, follow: bool, poll_s: float = 10.0) -> Iterator[bytes]:
    yield from _blocking(_app_logs)(app_id, follow, poll_s)


def cancel_call(call_id: str) -> None:
    import modal
    import modal.exception as mx

    try:
        modal.FunctionCall.from_id(call_id).cancel(terminate_containers=True)
    except mx.NotFoundError:
        pass  # gone already


async def _stop_app(app_id: str) -> None:
    from modal.client import _Client
    from modal_proto import api_pb2
    import modal.exception as mx

    client = await _Client.from_env()
    try:
        await client._stub.AppStop(api_pb2.AppStopRequest(app_id=app_id,
                                                          source=api_pb2.APP_STOP_SOURCE_PYTHON_CLIENT))
    except mx.NotFoundError:
        pass


def stop_app(app_id: str) -> None:
    _blocking(_stop_app)(app_id)


async def _expired(now: float) -> list[dict]:
    from modal.client import _Client
    from modal.config import config
    from modal_proto import api_pb2

    client = await _Client.from_env()
    listed = await client._stub.AppList(api_pb2.AppListRequest(environment_name=config.get("environment") or ""))
    live = (api_pb2.APP_STATE_DETACHED, api_pb2.APP_STATE_DETACHED_DISCONNECTED, api_pb2.APP_STATE_EPHEMERAL,
            api_pb2.APP_STATE_DEPLOYED, api_pb2.APP_STATE_INITIALIZING)
    found = []
    for item in listed.apps:
        if item.state not in live:
            continue
        tags = dict((await client._stub.AppGetTags(api_pb2.AppGetTagsRequest(app_id=item.app_id))).tags)
        deadline = tags.get(request.TAG_DEADLINE, "")
        if request.TAG_JOB in tags and deadline.isdigit() and int(deadline) < now:
            found.append({"app_id": item.app_id, "job": tags[request.TAG_JOB],
                          "state": api_pb2.AppState.Name(item.state).removeprefix("APP_STATE_").lower()})
    return found


def expired(now: float) -> list[dict]:
    """Every app of ours (tagged with a job) in the Modal environment whose deadline has passed and that still
    runs."""
    return _blocking(_expired)(now)
