"""A fake Modal control plane on 127.0.0.1: the real `modal` client (pinned in constraints.txt, since the protocol is
private) talks gRPC to it as to api.modal.com, pointed at it by MODAL_SERVER_URL with fake MODAL_TOKEN_ID/SECRET.

It implements the handful of RPCs the launcher's calls use (app create/lookup/stop/list/tags/logs, image and mount
upload, function create, spawn, outputs, cancel, secrets, volumes, blobs), records every request it gets in
`captured.jsonl` (secret values redacted) so tests check what the client really sent, and plays the container:
a spawned call runs the captured function (cloudpickled, as sent) with its captured arguments in a subprocess
(tests/modal/container.py), with the image's mounts and the volumes laid out under a per-call root and the
secrets in its environment; Modal's timeout, retries and terminate-on-cancel are enforced. Its stdout and stderr
become the app's logs.

Run: python -m tests.modal.fakemodal WORKDIR   (prints "PORT HTTP_PORT" to WORKDIR/ports when ready)
WORKDIR/secrets.json (name -> {KEY: VALUE}) holds the named Modal Secrets the workspace has.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpclib.const
import grpclib.server
from aiohttp import web
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from grpclib.exceptions import GRPCError
from modal_proto import api_grpc, api_pb2

Status = grpclib.const.Status
REPO = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)
# Requests that name nothing the test knows (a new app): their answer is recorded too, as `response`.
RECORD_RESPONSES = ("AppCreate",)


def new_id(prefix: str) -> str:
    """An object id shaped as Modal's (`ap-` and 22 letters or digits): the client tells an app id from an app name
    by that shape (`App.lookup`)."""
    return f"{prefix}-fake{next(_ids):018d}"


def _with_fallbacks():
    """Every RPC the fake does not implement answers UNIMPLEMENTED (and is recorded), so a client change shows."""
    ns = {}
    for name, fn in inspect.getmembers(api_grpc.ModalClientBase, predicate=inspect.isfunction):
        if not getattr(fn, "__isabstractmethod__", False):
            continue

        async def handler(self, stream, _name=name):
            req = await stream.recv_message()
            if _name not in RECORD_RESPONSES:
                self.record(_name, req)
            impl = getattr(self, f"do_{_name}", None)
            if impl is None:
                raise GRPCError(Status.UNIMPLEMENTED, f"fake Modal: {_name} is not implemented")
            if inspect.isasyncgenfunction(impl):
                async for msg in impl(req):
                    await stream.send_message(msg)
            else:
                resp = await impl(req)
                if _name in RECORD_RESPONSES:
                    self.record(_name, req, resp)
                await stream.send_message(resp)

        ns[name] = handler
    return type("_Fallbacks", (api_grpc.ModalClientBase,), ns)


@dataclass
class App:
    id: str
    name: str
    state: int
    tags: dict
    created: float = field(default_factory=time.time)
    stopped: float = 0.0
    disconnected: bool = False
    logs: list = field(default_factory=list)  # (entry id, fd, text)
    calls: list = field(default_factory=list)


@dataclass
class Call:
    id: str
    function_id: str
    app_id: str
    args: bytes
    input_id: str
    proc: subprocess.Popen | None = None
    result: api_pb2.GenericResult | None = None
    attempts: int = 0
    cancelled: bool = False


class FakeModal(_with_fallbacks()):
    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.http_base = ""
        self.apps: dict[str, App] = {}
        self.functions: dict[str, api_pb2.Function] = {}
        self.function_app: dict[str, str] = {}
        self.calls: dict[str, Call] = {}
        self.volumes: dict[str, dict] = {}  # name -> {id, dir}
        self.secrets: dict[str, dict] = {}  # id -> env
        self.images: dict[str, api_pb2.Image] = {}
        self.mounts: dict[str, list] = {}  # id -> [MountFile]
        self.files: dict[str, bytes] = {}  # sha256 -> bytes (MountPutFile)
        self.blobs: dict[str, bytes] = {}
        self._log_ids = itertools.count(1)
        self._captured = open(self.dir / "captured.jsonl", "a")
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- recording -----------------------------------------------------------------------------------------------

    def record(self, method: str, req, resp=None) -> None:
        data = MessageToDict(req, preserving_proto_field_name=True) if hasattr(req, "DESCRIPTOR") else {}
        if method == "SecretGetOrCreate" and data.get("env_dict"):
            data["env_dict"] = {k: "<redacted>" for k in data["env_dict"]}
        if method in ("MountPutFile",) and "data" in data:
            data["data"] = f"<{len(req.data)} bytes>"
        row = {"method": method, "request": data, "at": time.time()}
        if resp is not None:
            row["response"] = MessageToDict(resp, preserving_proto_field_name=True)
        self._captured.write(json.dumps(row) + "\n")
        self._captured.flush()

    # -- session -------------------------------------------------------------------------------------------------

    async def do_ClientHello(self, req):
        return api_pb2.ClientHelloResponse()

    async def do_AuthTokenGet(self, req):
        return api_pb2.AuthTokenGetResponse(token="")

    async def do_EnvironmentGetOrCreate(self, req):
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id="en-fake", metadata=api_pb2.EnvironmentMetadata(
                name=req.deployment_name or "main",
                settings=api_pb2.EnvironmentSettings(image_builder_version="2025.06")))

    # -- apps ----------------------------------------------------------------------------------------------------

    async def do_AppCreate(self, req):
        app = App(new_id("ap"), req.description, req.app_state or api_pb2.APP_STATE_EPHEMERAL, dict(req.tags))
        self.apps[app.id] = app
        return api_pb2.AppCreateResponse(app_id=app.id, app_page_url=f"https://modal.fake/apps/{app.id}")

    async def do_AppHeartbeat(self, req):
        return empty_pb2.Empty()

    async def do_AppGetLayout(self, req):
        return api_pb2.AppGetLayoutResponse()

    async def do_AppPublish(self, req):
        return api_pb2.AppPublishResponse(url="")

    async def do_AppSetObjects(self, req):
        return empty_pb2.Empty()

    async def do_AppClientDisconnect(self, req):
        app = self.apps[req.app_id]
        app.disconnected = True
        if app.state == api_pb2.APP_STATE_DETACHED:
            app.state = api_pb2.APP_STATE_DETACHED_DISCONNECTED
        elif app.state == api_pb2.APP_STATE_EPHEMERAL:
            self._stop_app(app)
        return empty_pb2.Empty()

    async def do_AppStop(self, req):
        app = self.apps.get(req.app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_id} not found")
        self._stop_app(app)
        return empty_pb2.Empty()

    def _stop_app(self, app: App) -> None:
        for call_id in app.calls:
            self._terminate(self.calls[call_id])
        if app.state != api_pb2.APP_STATE_STOPPED:
            app.state, app.stopped = api_pb2.APP_STATE_STOPPED, time.time()

    def _metadata(self, app: App) -> api_pb2.AppHandleMetadata:
        """What Modal sends with an app's handle (App.lookup, each app listed): its lifecycle, state included."""
        functions = {self.functions[f].function_name: f for f, a in self.function_app.items() if a == app.id}
        return api_pb2.AppHandleMetadata(
            description=app.name, app_id=app.id, environment_name="main", functions=functions,
            lifecycle=api_pb2.AppLifecycle(app_state=app.state, created_at=app.created, created_by="fake-user",
                                           stopped_at=app.stopped))

    async def do_AppGetOrCreate(self, req):
        """App.lookup: an app id (the client sends it as the name) finds that app, stopped or not; a name finds the
        environment's deployed app of that name, made with create_if_missing."""
        if req.app_name in self.apps:
            app = self.apps[req.app_name]
        elif req.app_name.startswith("ap-"):
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_name} not found")
        else:
            app = next((a for a in self.apps.values() if a.name == req.app_name
                        and a.state == api_pb2.APP_STATE_DEPLOYED), None)
            if app is None:
                if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    env = req.environment_name or "main"
                    raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found in environment '{env}'")
                app = App(new_id("ap"), req.app_name, api_pb2.APP_STATE_DEPLOYED, {})
                self.apps[app.id] = app
        return api_pb2.AppGetOrCreateResponse(app_id=app.id, handle_metadata=self._metadata(app))

    async def do_AppList(self, req):
        return api_pb2.AppListResponse(apps=[
            api_pb2.AppListResponse.AppListItem(app_id=a.id, description=a.name, state=a.state, created_at=a.created,
                                                stopped_at=a.stopped, name=a.name, metadata=self._metadata(a))
            for a in self.apps.values()])

    async def do_AppGetTags(self, req):
        app = self.apps.get(req.app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_id} not found")
        return api_pb2.AppGetTagsResponse(tags=app.tags)

    def _app_done(self, app: App) -> bool:
        calls = [self.calls[c] for c in app.calls]
        return app.state == api_pb2.APP_STATE_STOPPED or (app.disconnected and all(c.result for c in calls))

    async def do_AppGetLogs(self, req):
        app = self.apps[req.app_id]
        after = int(req.last_entry_id or 0)
        end = time.time() + min(req.timeout, 5.0)
        while True:
            done = self._app_done(app)  # read before the entries: nothing logged after it is missed
            new = [e for e in app.logs if e[0] > after]
            if new:
                yield api_pb2.TaskLogsBatch(entry_id=str(new[-1][0]), items=[
                    api_pb2.TaskLogs(data=text, file_descriptor=fd) for _, fd, text in new])
                return
            if done:
                yield api_pb2.TaskLogsBatch(app_done=True)
                return
            if time.time() >= end:
                return
            await asyncio.sleep(0.1)

    # -- images, mounts, blobs -----------------------------------------------------------------------------------

    async def do_ImageGetOrCreate(self, req):
        image_id = new_id("im")
        self.images[image_id] = req.image
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id, result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            metadata=api_pb2.ImageMetadata(python_version_info=sys.version, python_packages={}))

    async def do_ImageJoinStreaming(self, req):
        yield api_pb2.ImageJoinStreamingResponse(
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS), eof=True)

    async def do_MountPutFile(self, req):
        if req.WhichOneof("data_oneof") == "data":
            self.files[req.sha256_hex] = req.data
        elif req.WhichOneof("data_oneof") == "data_blob_id":
            self.files[req.sha256_hex] = self.blobs[req.data_blob_id]
        return api_pb2.MountPutFileResponse(exists=req.sha256_hex in self.files)

    async def do_MountBatchedCheckExistence(self, req):
        return api_pb2.MountBatchedCheckExistenceResponse(
            missing_sha256_hex_hashes=[h for h in req.sha256_hex_hashes if h not in self.files])

    async def do_MountGetOrCreate(self, req):
        mount_id = new_id("mo")
        self.mounts[mount_id] = list(req.files)
        return api_pb2.MountGetOrCreateResponse(mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata(
            content_checksum_sha256_hex=hashlib.sha256(repr(sorted(f.sha256_hex for f in req.files)).encode())
            .hexdigest()))

    async def do_BlobCreate(self, req):
        blob_id = new_id("bl")
        return api_pb2.BlobCreateResponse(blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(
            items=[f"{self.http_base}/blob/{blob_id}"]))

    async def do_BlobGet(self, req):
        return api_pb2.BlobGetResponse(download_url=f"{self.http_base}/blob/{req.blob_id}")

    # -- secrets -------------------------------------------------------------------------------------------------

    async def do_SecretGetOrCreate(self, req):
        if req.env_dict:
            secret_id = new_id("st")
            self.secrets[secret_id] = dict(req.env_dict)
            return api_pb2.SecretGetOrCreateResponse(secret_id=secret_id)
        named = json.loads((self.dir / "secrets.json").read_text()) if (self.dir / "secrets.json").exists() else {}
        if req.deployment_name not in named:
            raise GRPCError(Status.NOT_FOUND, f"Secret '{req.deployment_name}' not found in environment 'main'")
        secret_id = f"st-named-{req.deployment_name}"
        self.secrets[secret_id] = named[req.deployment_name]
        return api_pb2.SecretGetOrCreateResponse(secret_id=secret_id)

    # -- volumes -------------------------------------------------------------------------------------------------

    def volume_dir(self, name: str) -> Path:
        return self.dir / "volumes" / name

    def _volume(self, volume_id: str) -> Path:
        for name, v in self.volumes.items():
            if v["id"] == volume_id:
                return self.volume_dir(name)
        raise GRPCError(Status.NOT_FOUND, f"Volume {volume_id} not found")

    async def do_VolumeGetOrCreate(self, req):
        name = req.deployment_name
        if name not in self.volumes:
            if not self.volume_dir(name).is_dir() and \
                    req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"Volume '{name}' not found in environment 'main'")
            self.volume_dir(name).mkdir(parents=True, exist_ok=True)
            self.volumes[name] = {"id": new_id("vo")}
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=self.volumes[name]["id"], version=api_pb2.VOLUME_FS_VERSION_V1,
            metadata=api_pb2.VolumeMetadata(name=name, version=api_pb2.VOLUME_FS_VERSION_V1))

    def _vpath(self, volume_id: str, path: str) -> Path:
        root = self._volume(volume_id)
        p = (root / path.lstrip("/")).resolve()
        if p != root.resolve() and root.resolve() not in p.parents:
            raise GRPCError(Status.INVALID_ARGUMENT, f"path {path} escapes the volume")
        return p

    async def do_VolumeListFiles(self, req):
        root, p = self._volume(req.volume_id), self._vpath(req.volume_id, req.path or "/")
        if not p.exists():
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {req.path}")
        found = [p] if p.is_file() else (p.rglob("*") if req.recursive else p.iterdir())
        entries = []
        for f in sorted(found):
            st = f.stat()
            entries.append(api_pb2.FileEntry(
                path=f.relative_to(root.resolve() if p.is_relative_to(root.resolve()) else root).as_posix(),
                type=api_pb2.FileEntry.FILE if f.is_file() else api_pb2.FileEntry.DIRECTORY,
                mtime=int(st.st_mtime), size=st.st_size if f.is_file() else 0))
        yield api_pb2.VolumeListFilesResponse(entries=entries)

    async def do_VolumeGetFile2(self, req):
        p = self._vpath(req.volume_id, req.path)
        if not p.is_file():
            raise GRPCError(Status.NOT_FOUND, f"No such file: {req.path}")
        size = p.stat().st_size
        url = f"{self.http_base}/vol/{req.volume_id}/{req.path.lstrip('/')}"
        return api_pb2.VolumeGetFile2Response(get_urls=[url] if size else [], size=size, start=0, len=size)

    async def do_VolumePutFiles(self, req):
        for f in req.files:
            dest = self._vpath(req.volume_id, f.filename)
            if dest.exists() and req.disallow_overwrite_existing_files:
                raise GRPCError(Status.ALREADY_EXISTS, f"{f.filename} already exists")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.fake-tmp")
            tmp.write_bytes(self.files[f.sha256_hex])
            os.replace(tmp, dest)
        return empty_pb2.Empty()

    async def do_VolumeRemoveFile(self, req):
        p = self._vpath(req.volume_id, req.path)
        if not p.exists():
            raise GRPCError(Status.NOT_FOUND, f"No such file: {req.path}")
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
        return empty_pb2.Empty()

    async def do_VolumeCommit(self, req):
        self._volume(req.volume_id)
        return api_pb2.VolumeCommitResponse(skip_reload=True)

    async def do_VolumeReload(self, req):
        return empty_pb2.Empty()

    # -- functions and calls -------------------------------------------------------------------------------------

    async def do_FunctionPrecreate(self, req):
        return api_pb2.FunctionPrecreateResponse(function_id=new_id("fu"), handle_metadata=api_pb2.FunctionHandleMetadata(
            function_name=req.function_name, function_type=req.function_type))

    async def do_FunctionCreate(self, req):
        function_id = req.existing_function_id or new_id("fu")
        if req.HasField("function_data"):  # a GPU fallback list: one ranked copy per GPU type
            data, fn = req.function_data, req.function_data.ranked_functions[0].function
        else:
            fn = req.function
            data = api_pb2.FunctionData(function_name=fn.function_name, function_type=fn.function_type,
                                        timeout_secs=fn.timeout_secs, ranked_functions=[
                                            api_pb2.FunctionData.RankedFunction(rank=0, function=fn)])
        self.functions[function_id] = fn
        self.function_app[function_id] = req.app_id
        return api_pb2.FunctionCreateResponse(
            function_id=function_id, function_data=data,
            handle_metadata=api_pb2.FunctionHandleMetadata(
                function_name=req.function.function_name, function_type=req.function.function_type,
                max_object_size_bytes=2 * 1024 * 1024))

    async def do_FunctionMap(self, req):
        fn = self.functions[req.function_id]
        call_id = new_id("fc")
        items = []
        for item in req.pipelined_inputs:
            args = item.input.args or self.blobs.get(item.input.args_blob_id, b"")
            call = Call(call_id, req.function_id, self.function_app[req.function_id], args, new_id("in"))
            self.calls[call_id] = call
            self.apps[call.app_id].calls.append(call_id)
            self._start(call)
            items.append(api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=call.input_id))
        return api_pb2.FunctionMapResponse(function_call_id=call_id, pipelined_inputs=items,
                                           retry_policy=fn.retry_policy)

    async def do_FunctionGetOutputs(self, req):
        call = self.calls.get(req.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        end = time.time() + min(max(req.timeout, 0.0), 5.0)
        while call.result is None and time.time() < end:
            await asyncio.sleep(0.1)
        if call.result is None:
            return api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=1, last_entry_id=req.last_entry_id)
        return api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=0, outputs=[api_pb2.FunctionGetOutputsItem(
            result=call.result, idx=0, input_id=call.input_id, data_format=api_pb2.DATA_FORMAT_PICKLE,
            retry_count=call.attempts - 1)])

    async def do_FunctionCallCancel(self, req):
        call = self.calls.get(req.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        call.cancelled = True
        if req.terminate_containers:
            self._terminate(call)
        return empty_pb2.Empty()

    # -- the container -------------------------------------------------------------------------------------------

    def _log(self, app_id: str, fd: int, text: str) -> None:
        self.apps[app_id].logs.append((next(self._log_ids), fd, text))

    def _start(self, call: Call) -> None:
        threading.Thread(target=self._run_call, args=(call,), name=f"container-{call.id}", daemon=True).start()

    def _run_call(self, call: Call) -> None:
        """Attempts until success, retries spent, or cancel: what Modal's scheduler does for one input."""
        fn = self.functions[call.function_id]
        retries = fn.retry_policy.retries if fn.HasField("retry_policy") else 0
        while True:
            call.attempts += 1
            status, data, exc = self._attempt(call, fn)
            if status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS or call.cancelled or \
                    call.attempts > retries:
                break
            self._log(call.app_id, api_pb2.FILE_DESCRIPTOR_INFO, f"retrying after {exc}\n")
            time.sleep(0.2)
        if call.cancelled:
            status, exc = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED, "terminated: the call was cancelled"
        result = api_pb2.GenericResult(status=status, exception=exc or "")
        if data is not None:
            result.data = data
        call.result = result

    def _attempt(self, call: Call, fn: api_pb2.Function):
        from launcher.backends.modal.request import NODE_BASE

        work = self.dir / "containers" / f"{call.id}-{call.attempts}"
        root = work / "root"
        root.mkdir(parents=True)
        node = root / NODE_BASE.lstrip("/")
        node.mkdir(parents=True, exist_ok=True)
        # The function's mounts (the image's mount layers among them), at their paths under this container's root.
        for mount_id in fn.mount_ids:
            for f in self.mounts.get(mount_id, []):
                dest = root / f.filename.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(self.files[f.sha256_hex])
        for vm in fn.volume_mounts:
            dest = root / vm.mount_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(self._volume(vm.volume_id).resolve())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "AWS_"))}
        for secret_id in fn.secret_ids:
            env.update(self.secrets[secret_id])
        env.update(MODAL_SERVER_URL=os.environ["FAKE_MODAL_URL"], MODAL_TOKEN_ID="ak-container",
                   MODAL_TOKEN_SECRET="as-container", FAKE_MODAL_ROOT=str(root), FAKE_MODAL_BASE=NODE_BASE,
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONPATH=str(REPO))
        (work / "function.pkl").write_bytes(fn.function_serialized)
        (work / "args.pkl").write_bytes(call.args)
        proc = subprocess.Popen([sys.executable, "-m", "tests.modal.container", str(work)], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        call.proc = proc
        readers = [threading.Thread(target=self._pump, args=(call.app_id, pipe, fd), daemon=True)
                   for pipe, fd in ((proc.stdout, api_pb2.FILE_DESCRIPTOR_STDOUT),
                                    (proc.stderr, api_pb2.FILE_DESCRIPTOR_STDERR))]
        for t in readers:
            t.start()
        timeout = fn.timeout_secs or 300
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        for t in readers:
            t.join(10)
        if timed_out:
            return api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT, None, f"timed out after {timeout} s"
        out = work / "result.pkl"
        if proc.returncode == 0 and out.exists():
            return api_pb2.GenericResult.GENERIC_STATUS_SUCCESS, out.read_bytes(), None
        return api_pb2.GenericResult.GENERIC_STATUS_FAILURE, None, f"container exited {proc.returncode}"

    def _pump(self, app_id: str, pipe, fd: int) -> None:
        for line in iter(pipe.readline, b""):
            self.loop.call_soon_threadsafe(self._log, app_id, fd, line.decode(errors="replace"))
        pipe.close()

    def _terminate(self, call: Call) -> None:
        """Modal's terminate: SIGTERM to the container, SIGKILL a few seconds later."""
        call.cancelled = True
        proc = call.proc
        if proc is None or proc.poll() is not None:
            return
        _kill_group(proc, signal.SIGTERM)

        def later():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def http_app(fake: FakeModal) -> web.Application:
    """Blob uploads/downloads and volume block reads: what Modal serves from S3/R2 URLs."""

    async def put_blob(request):
        data = await request.read()
        fake.blobs[request.match_info["id"]] = data
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def get_blob(request):
        data = fake.blobs.get(request.match_info["id"])
        return web.Response(status=404) if data is None else web.Response(body=data)

    async def get_block(request):
        p = fake._vpath(request.match_info["vid"], request.match_info["path"])
        return web.Response(body=p.read_bytes()) if p.is_file() else web.Response(status=404)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_put("/blob/{id}", put_blob)
    app.router.add_get("/blob/{id}", get_blob)
    app.router.add_get("/vol/{vid}/{path:.*}", get_block)
    return app


async def serve(workdir: Path) -> None:
    fake = FakeModal(workdir)
    fake.loop = asyncio.get_running_loop()
    runner = web.AppRunner(http_app(fake))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]
    fake.http_base = f"http://127.0.0.1:{http_port}"
    server = grpclib.server.Server([fake])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    os.environ["FAKE_MODAL_URL"] = f"http://127.0.0.1:{port}"
    (workdir / "ports.tmp").write_text(f"{port} {http_port}\n")
    os.replace(workdir / "ports.tmp", workdir / "ports")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        fake.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for call in fake.calls.values():
        fake._terminate(call)
    server.close()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
