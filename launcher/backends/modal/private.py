"""The `modal` client's private parts the launcher uses, all here: nothing else in `launcher/` touches `_stub`,
`modal._*`, `modal.client._Client` or `modal_proto` (tests/modal/test_modal_private.py scans for it).

Tested on the client pinned in constraints.txt: modal 1.6.4 (TESTED_ON). A client upgrade reads this module first
and runs tests/modal/ against the fake control plane, which answers only the RPCs it implements (anything else is
UNIMPLEMENTED, so a changed call shows). Everything else in app.py is the client's public API: `App.lookup(id)
.stop()`, `Environment.from_context().apps.list()` with `App.get_tags()` and `App.info()`,
`FunctionCall.from_id(id).get/cancel`, `Client.from_env().hello()`.

Why each private part stays, in 1.6.4:

* The app's log stream (`AppGetLogs`). The public `App.logs.stream()` holds each request for a fixed 55 s on the
  server (`_STREAM_RPC_TIMEOUT_SECONDS`) and takes no entry id to go on from: a silent connection cannot be told
  from a quiet job within MODAL_CALL_S, and a stream resumed after a cut reads the app's whole log again.
  `App.logs.fetch()`/`tail()` read by time window (AppCountLogs + AppFetchLogs), not after an entry, so lines
  written while reading can be missed or doubled. The launcher needs a cursor (`last_entry_id`) and its own poll.
* Running that stream from a blocking caller (`synchronize_api`): the client's connection lives on the client's
  own event loop; its public objects are all wrapped this way, an async generator of ours is not.
* Forgetting the process's client after a call that hung (`_Client._set_env_client(None)`): the client has no
  public way to drop a half-dead connection, and `Client.from_env()` hands the same one back until it is dropped.
* A gRPC status from an error the client raised (`exc._grpc_status`): the client sets it on its own exception types
  and has no public property for it (the one it has warns).
* Sending the node's module by value: the client pickles the function with its vendored cloudpickle
  (`modal._vendor.cloudpickle`), so only that copy's `register_pickle_by_value` reaches the pickler it uses.
"""
from __future__ import annotations

from typing import AsyncIterator

TESTED_ON = ("1.6.4",)


def forget_env_client() -> None:
    """The next `Client.from_env()` makes a new client (a new connection); the old one is left to itself."""
    try:
        from modal.client import _Client

        _Client._set_env_client(None)
    except Exception:  # noqa: BLE001 - a client version without it: the old connection is kept
        pass


def grpc_status(exc: BaseException):
    """The gRPC status the client's own exception carries (grpclib.const.Status), or None."""
    return getattr(exc, "_grpc_status", None)


def send_by_value(module) -> None:
    """Pickle `module`'s functions by value with the pickler the client uses for `serialized=True` functions."""
    from modal._vendor import cloudpickle

    cloudpickle.register_pickle_by_value(module)


def blocking(fn):
    """An async function or generator of ours, run on the client's event loop from a blocking caller."""
    from modal._utils.async_utils import synchronize_api

    return synchronize_api(fn)


async def env_client():
    """The process's client (`Client.from_env()`), as the async object the streams below take."""
    from modal.client import _Client

    return await _Client.from_env()


def app_log_batches(client, app_id: str, *, timeout: float, last_entry_id: str) -> AsyncIterator:
    """One AppGetLogs request: the app's log batches after `last_entry_id` (all of them for ""), the server waiting
    up to `timeout` s for a new one (0: what is there now). Each batch has `entry_id` (the cursor to go on from)
    and `app_done`; `stdout_of` reads its text."""
    from modal_proto import api_pb2

    req = api_pb2.AppGetLogsRequest(app_id=app_id, timeout=timeout, last_entry_id=last_entry_id)
    return client._stub.AppGetLogs.unary_stream(req).__aiter__()


def stdout_of(batch) -> bytes:
    """A log batch's stdout, as bytes (its stderr and Modal's own lines left out)."""
    from modal_proto import api_pb2

    return b"".join(item.data.encode() for item in batch.items
                    if item.data and item.file_descriptor == api_pb2.FILE_DESCRIPTOR_STDOUT)
