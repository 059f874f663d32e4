"""The Modal calls (the `modal` client, imported here only): submit a job, read its call, stream its app's logs,
cancel it, stop apps, find expired ones. Each function does one thing the backend needs.

Through the client's public API (`App.lookup(id).stop()`, `Environment.from_context().apps.list()`,
`App.get_tags()`, `FunctionCall.from_id(id).get/cancel`), except what it has no public call for in the pinned
client: those few private calls (the app's log stream by entry id, among them) are in private.py, each with why.

The client validates nothing offline (a GPU string, a secret name): request.py checks what can be checked before
any call, and every error Modal answers with that the user can fix becomes one UserError line here.

Every control-plane call after submit is bounded by netpolicy.MODAL_CALL_S (the client has no per-call timeout of
its own and retries a dead connection at length): the blocking ones run in a thread that is waited on that long,
the log stream waits that long (past its own poll) for each batch. A control plane that cannot be asked raises
`Unreachable`; the backend's `status` makes that the `unreachable` state, never `lost`.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from ...errors import UserError
from ...plan import Plan
from ..slots import fill
from . import private, request

TOKEN_HELP = "run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"


class Unreachable(Exception):
    """Modal's control plane could not be asked (no connection, no answer in time, a transient gRPC status)."""


def call_limit() -> float:
    from ... import netpolicy

    return netpolicy.seconds(netpolicy.MODAL_CALL_S)


def unreachable(exc: BaseException) -> str | None:
    """Why Modal could not be asked, in one line, when `exc` means that; None for a real answer (not found, a
    function that failed) or a bug."""
    import grpclib
    import grpclib.exceptions
    import modal.exception as mx
    from grpclib.const import Status

    if isinstance(exc, Unreachable):
        return str(exc)
    if isinstance(exc, (mx.ConnectionError, mx.InternalFailure, OSError, grpclib.exceptions.StreamTerminatedError,
                        grpclib.exceptions.ProtocolError)):
        return f"cannot reach Modal: {_first_line(exc)}"
    # The client's own types for UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, CANCELLED (ServiceError) and INTERNAL; a
    # bare grpclib error by its status (read as set: the client warns on the property).
    status = private.grpc_status(exc) or (getattr(exc, "status", None) if type(exc) is grpclib.GRPCError else None)
    if isinstance(exc, (mx.ServiceError, mx.InternalError)) or status in (
            Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.INTERNAL, Status.UNKNOWN, Status.CANCELLED):
        return f"Modal did not answer: {status.name + ': ' if status else ''}{_first_line(exc)}"
    if isinstance(exc, mx.TimeoutError) and not isinstance(exc, (mx.FunctionTimeoutError, mx.OutputExpiredError)):
        return f"Modal did not answer in time: {_first_line(exc)}"  # the client's own retries ran out
    if _raised_in_transport(exc):
        # The gRPC/HTTP2 layer tripping over a connection that went away under it (grpclib's "'Connection' object
        # has no attribute '_transport'", say): no answer about the call, which a remote error would be.
        return f"cannot reach Modal: {type(exc).__name__}: {_first_line(exc)}"
    return None


_TRANSPORT_CODE = ("/grpclib/", "/h2/", "/hpack/", "/asyncio/", "/ssl.py", "/socket.py")


def _raised_in_transport(exc: BaseException) -> bool:
    """Whether `exc` was raised inside the network stack (its innermost frame is grpclib's, h2's, asyncio's...),
    not by the client reporting what the function call did."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return any(part in tb.tb_frame.f_code.co_filename.replace("\\", "/") for part in _TRANSPORT_CODE)


def _forget_client() -> None:
    """After a call that hung or found the connection broken: the next call makes a new client (a new connection)
    instead of waiting on the old one, which a blackholed link leaves half-dead (a real Modal client notices only
    after its keepalive timeout; one that lost bytes in the outage never recovers)."""
    private.forget_env_client()


def bounded(fn, what: str, limit: float | None = None):
    """`fn()` (a blocking Modal call), waited on for at most `limit` seconds (default MODAL_CALL_S) in a thread of
    its own: a control plane that hangs (a blackholed connection) raises Unreachable in bounded time, and so does
    one that cannot be reached. A call left hanging ends with the process (its thread is a daemon)."""
    limit = call_limit() if limit is None else limit
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"modal: {what}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        _forget_client()
        raise Unreachable(f"Modal did not answer in {limit:g} s (while {what})")
    if "error" in box:
        why = unreachable(box["error"])
        if why is not None:
            _forget_client()
            raise Unreachable(why if "(while" in why else f"{why} (while {what})") from None
        raise box["error"]
    return box.get("value")


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
        bounded(lambda: modal.Client.from_env().hello(), "saying hello")
    except Unreachable as exc:
        raise UserError(f"cannot reach Modal ({exc}): check your network or MODAL_SERVER_URL") from None
    except mx.AuthError as exc:
        raise UserError(f"no usable Modal token ({_first_line(exc)}): {TOKEN_HELP}") from None
    except mx.ConnectionError as exc:
        raise UserError(f"cannot reach Modal ({_first_line(exc)}): check your network or MODAL_SERVER_URL") from None


def _node_body():
    """run_node, sent by value: the container has no launcher package until the snapshot is unpacked."""
    from . import node

    private.send_by_value(node)
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
    """The function call's own view: ('running', None, None) until it returns, then how it ended. Raises
    Unreachable when Modal could not be asked (bounded by MODAL_CALL_S): that says nothing about the call."""
    return bounded(lambda: _call_result(call_id), f"looking at function call {call_id}")


def _call_result(call_id: str) -> tuple[str, int | None, str | None]:
    import modal
    import modal.exception as mx

    call = modal.FunctionCall.from_id(call_id)
    try:
        rc = call.get(timeout=0)
    except mx.OutputExpiredError:
        return "lost", None, f"function call {call_id} has no output any more (expired)"
    except mx.FunctionTimeoutError:
        return "timeout", None, f"function call {call_id} reached Modal's timeout (the dead-man switch)"
    except TimeoutError:
        return "running", None, None
    except Exception as exc:  # noqa: BLE001 - the container died or the call was terminated, or no answer
        if unreachable(exc) is not None:
            raise
        return "lost", None, f"function call {call_id} ended without a result: {_first_line(exc)}"
    return "exited", int(rc) if rc is not None else None, None


# Where a follower can pick the app's log stream up again without reading it from the start: per app, the stream's
# length (bytes) after each batch -> the entry id that batch ended with. This process only (a reconnect after a
# drop happens in the process that was following).
_RESUME: dict[str, dict[int, str]] = {}


async def _app_logs(app_id: str, follow: bool, poll_s: float, offset: int = 0):
    """The job's output as Modal streams the app's logs (private.app_log_batches: the public stream takes no entry
    id): from the start, or right after `offset` bytes of it (from the last entry id this process saw at or before
    that point, the rest skipped); with follow, until the app is done. Each batch is waited on for at most the poll
    plus MODAL_CALL_S: a silent connection raises Unreachable."""
    import asyncio

    limit = call_limit()
    try:
        client = await asyncio.wait_for(private.env_client(), limit)
    except asyncio.TimeoutError:
        _forget_client()
        raise Unreachable(f"Modal did not answer in {limit:g} s (while opening the client)") from None
    marks = _RESUME.setdefault(app_id, {})
    at = max((pos for pos in marks if pos <= offset), default=0)
    last = marks.get(at, "")
    skip = offset - at
    while True:
        done = False
        batches = private.app_log_batches(client, app_id, timeout=poll_s if follow else 0, last_entry_id=last)
        while True:
            try:
                batch = await asyncio.wait_for(batches.__anext__(), poll_s + limit)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                _forget_client()
                raise Unreachable(f"the log stream of app {app_id} went silent for {poll_s + limit:g} s") from None
            except Exception as exc:  # noqa: BLE001 - sorted: a dropped connection is Unreachable
                why = unreachable(exc)
                if why is None:
                    raise
                _forget_client()
                raise Unreachable(f"{why} (while streaming the logs of app {app_id})") from None
            if batch.app_done:
                done = True
                break
            # stdout is the agent's output (the job's); stderr carries the bootstrap's steps, for Modal's
            # dashboard (a setup failure reaches `launch status` through result.json).
            data = private.stdout_of(batch)
            at += len(data)
            if batch.entry_id:
                last = batch.entry_id
                marks[at] = last
            if skip:
                cut = min(skip, len(data))
                data, skip = data[cut:], skip - cut
            if data:
                yield data
        if done or not follow:
            return


def app_logs(app_id: str, follow: bool, poll_s: float = 10.0, offset: int = 0) -> Iterator[bytes]:
    yield from private.blocking(_app_logs)(app_id, follow, poll_s, offset)


def cancel_call(call_id: str) -> None:
    import modal
    import modal.exception as mx

    def cancel():
        try:
            modal.FunctionCall.from_id(call_id).cancel(terminate_containers=True)
        except mx.NotFoundError:
            pass  # gone already

    bounded(cancel, f"cancelling function call {call_id}")


def stop_app(app_id: str) -> None:
    """Stop the app (its containers end): the app by its id, then its stop; one already gone is left alone."""
    import modal
    import modal.exception as mx

    def stop():
        try:
            modal.App.lookup(app_id).stop()
        except mx.NotFoundError:
            pass  # gone already

    bounded(stop, f"stopping app {app_id}")


# The app states the sweeper ends (the public AppState: DETACHED covers a detached app whose client went away).
# Listing already leaves out stopped and disabled apps; one that is stopping needs nothing more.
_LIVE = ("ephemeral", "detached", "deployed", "initializing")


def expired(now: float) -> list[dict]:
    """Every app of ours (tagged with a job) in the Modal environment whose deadline has passed and that still
    runs. Each call (the listing, each app's tags) is bounded by MODAL_CALL_S."""
    import modal

    environment = modal.Environment.from_context()  # MODAL_ENVIRONMENT, else the token's default
    found = []
    for app in bounded(environment.apps.list, "listing apps"):
        state = bounded(app.info, f"reading app {app.app_id}").lifecycle.state.value  # the listing's: no call
        if state not in _LIVE:
            continue
        tags = bounded(app.get_tags, f"reading the tags of app {app.app_id}")
        deadline = tags.get(request.TAG_DEADLINE, "")
        if request.TAG_JOB in tags and deadline.isdigit() and int(deadline) < now:
            found.append({"app_id": app.app_id, "job": tags[request.TAG_JOB], "state": state})
    return found
