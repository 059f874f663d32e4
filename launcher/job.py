"""The Job: what to run, where, with what resources and limits. One pydantic model, every field validated."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, field_validator, \
    model_validator

from .backends import DEFAULT_BACKEND, entries, entry
from .datapool.url import StoreUrl
from .errors import UserError, did_you_mean
from .gpus import GpuRequest, parse_gpu
from .netpolicy import PUSH_TIMEOUT_S
from .relay.config import RelayBinding
from .units import parse_duration, parse_size

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Set by the agent from the job's own fields; a user value would silently split the datapool.
RESERVED_ENV = {"DATAPOOL_ROOT": "--datapool", "EXPERIMENT": "--experiment", "EXPERIMENT_DIR": "--experiment",
                "JOB_ID": None, "LAUNCH_BACKEND": "--backend"}


class NodeNetwork(BaseModel):
    """The `node:` profile section: the network the node itself is behind. Never copied from this machine's
    environment (a laptop's proxy is usually its own, e.g. on 127.0.0.1)."""

    model_config = ConfigDict(extra="forbid")

    https_proxy: str | None = Field(None, description="proxy the node's S3 and HTTPS traffic goes through, e.g. "
                                    "http://proxy.corp:3128 (HTTPS_PROXY on the node)")
    no_proxy: str | None = Field(None, description="hosts the node reaches directly (NO_PROXY on the node)")
    ca_bundle: str | None = Field(None, description="a PEM file on this machine; its content travels with the job and "
                                  "becomes the node's AWS_CA_BUNDLE")

    @field_validator("https_proxy")
    @classmethod
    def _proxy(cls, v: str | None) -> str | None:
        if v is not None and (urlparse(v).scheme not in ("http", "https") or not urlparse(v).netloc):
            raise ValueError(f"bad proxy URL {v!r}: use http(s)://host:port, e.g. http://proxy.corp:3128")
        return v

    def ca_pem(self) -> str | None:
        """The CA bundle's content (read at plan time: the node has no copy of this machine's files)."""
        if not self.ca_bundle:
            return None
        path = Path(self.ca_bundle).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"node.ca_bundle {self.ca_bundle}: cannot read it ({exc.__class__.__name__})") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise UserError(f"node.ca_bundle {self.ca_bundle}: no PEM certificate in it")
        return text


def _err(exc: Exception) -> str:
    return str(exc.args[0]) if isinstance(exc, UserError) else str(exc)


class JobFields(BaseModel):
    """A script plus everything needed to run it somewhere and tear it down afterwards. `Job` (below) adds one
    optional section per registered backend, named after it and typed by that backend's Options model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    script: str = Field(description="path of the script to run, relative to workdir")
    args: list[str] = Field(default_factory=list, description="arguments passed to the script untouched")
    name: str | None = Field(None, description="run name; default: the script's file name without .py")
    backend: str = Field(DEFAULT_BACKEND, description="where to run: a registered backend (`launch --help` lists them)")
    gpu: str | None = Field(None, description="GPU as TYPE[:COUNT], e.g. A10G, A100-80GB:2, H100:8; or a count "
                            "alone where the backend's machines decide the type (--gpu 2)")
    cpus: float | None = Field(None, gt=0, description="CPU cores")
    memory: str | None = Field(None, description="memory, e.g. 32Gi")
    disk: str | None = Field(None, description="disk, e.g. 200Gi")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    secrets: list[str] = Field(default_factory=list, description="names of secrets (env vars) to pass; never values")
    experiment: str = Field("default", description="experiment name: the datapool folder experiments/<name>")
    datapool: StoreUrl | None = Field(None, description="datapool store URL: file:///abs/dir or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint for an s3:// datapool, e.g. http://minio:9000")
    max_runtime: int | None = Field(None, description="hard limit, e.g. 2h; the script is stopped after it")
    grace_period: int = Field(30, description="seconds between SIGTERM and SIGKILL when stopping the script")
    push_interval: int = Field(30, description="how often checkpoints and reports are pushed to the store while running")
    push_timeout: int = Field(PUSH_TIMEOUT_S, description="how long the last push keeps trying a store that does not "
                              "answer before the job ends push_failed; also the time kept before the deadline for it")
    spot: bool = Field(False, description="use spot/preemptible capacity")
    max_restarts: int = Field(0, ge=0, le=20, description="relaunch a preempted job up to N times; it resumes "
                              "from the newest checkpoint it pushed")
    terminate_after: bool = Field(False, description="client waits for the end and tears the machine down")
    keep_on_failure: bool = Field(False, description="keep the machine after a failure, for debugging")
    num_nodes: int = Field(1, ge=1, description="machines, each running the script (torchrun for a .py script); "
                           "the backend says how many it can give")
    torchrun: bool = Field(False, description="run a .py script under torchrun on one node too (always with "
                                              "num_nodes > 1)")
    pending_timeout: int | None = Field(None, description="a job still waiting for its machine after this long is "
                                       "reported and ended (default: the backend's, 10m)")
    workdir: str = Field(".", description="project root whose files travel with the job")
    relay: RelayBinding | None = Field(None, description="run as one worker of a relay run: hold its lease, resume "
                                       "from its committed checkpoint (docs/relay.md)")
    node: NodeNetwork | None = Field(None, description="the node's network: https_proxy, no_proxy, ca_bundle "
                                     "(docs/datapool.md)")

    _gpu_request: GpuRequest | None = PrivateAttr(None)
    _unused_sections: tuple[str, ...] = PrivateAttr(())

    @field_validator("script")
    @classmethod
    def _script(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("script is empty: give the path of a script, e.g. runners/sft_run.py")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"bad name {v!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from .backends import check_backend

        try:
            check_backend(v)
        except UserError as e:
            raise ValueError(_err(e)) from None
        return v

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> str | None:
        if v is None or v == "" or (isinstance(v, str) and v.lower() in ("none", "cpu")):
            return None
        try:
            return str(parse_gpu(str(v)))
        except UserError as e:
            raise ValueError(_err(e)) from None

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _size(cls, v: Any, info) -> str | None:
        if v is None:
            return None
        try:
            parse_size(v, info.field_name)
        except UserError as e:
            raise ValueError(_err(e)) from None
        return str(v)

    @field_validator("max_runtime", "grace_period", "push_interval", "push_timeout", "pending_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any, info) -> int | None:
        if v is None:
            return None
        try:
            return parse_duration(v, info.field_name.replace("_", "-"))
        except UserError as e:
            raise ValueError(_err(e)) from None

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_KEY.match(key):
                raise ValueError(f"bad env name {key!r}: use letters, digits and '_', not starting with a digit")
            if key in RESERVED_ENV:
                flag = RESERVED_ENV[key]
                raise ValueError(f"{key} is set by launch" + (f"; use {flag} instead" if flag else "; drop it"))
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for key in v:
            if not _ENV_KEY.match(key):
                raise ValueError(f"bad secret name {key!r}: a secret is named like an env var, e.g. HF_TOKEN")
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"bad experiment name {v!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and (urlparse(v).scheme not in ("http", "https") or not urlparse(v).netloc):
            raise ValueError(f"bad endpoint URL {v!r}: use http(s)://host[:port], e.g. http://127.0.0.1:9000")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _other_sections(cls, data: Any, handler) -> "JobFields":
        """A section of a backend the job does not use is set aside unvalidated (the plan names it): one profile
        can serve steps on several backends (a pipeline), and a step never trips over a section it does not use."""
        unused: tuple[str, ...] = ()
        if isinstance(data, dict):
            chosen = data.get("backend") or DEFAULT_BACKEND
            unused = tuple(name for name in entries() if name != chosen and data.get(name) is not None)
            data = {k: v for k, v in data.items() if k not in unused}
        job = handler(data)
        if unused:
            job._unused_sections = unused
        return job

    @model_validator(mode="before")
    @classmethod
    def _relay_defaults(cls, data: Any) -> Any:
        """A relay worker's grace period fits its lease (TTL/4 unless given), and its shared secret travels as a
        secret, by name."""
        if not isinstance(data, dict) or not data.get("relay"):
            return data
        relay = data["relay"]
        get = relay.get if isinstance(relay, dict) else lambda k, d=None: getattr(relay, k, d)
        data = dict(data)
        ttl = get("ttl") or RelayBinding.model_fields["ttl"].default
        if data.get("grace_period") is None:
            data["grace_period"] = max(1, int(float(ttl) // 4))
        secret = get("secret_env") or RelayBinding.model_fields["secret_env"].default
        if isinstance(secret, str) and secret not in (data.get("secrets") or []):
            data["secrets"] = [*(data.get("secrets") or []), secret]
        return data

    @model_validator(mode="after")
    def _backend_fields(self) -> "JobFields":
        chosen = entry(self.backend)
        if chosen.options is not None and getattr(self, self.backend, None) is None:
            try:
                chosen.options()
            except ValidationError:
                raise ValueError(f"--backend {self.backend} needs {chosen.needs or 'its ' + self.backend + ': section'}"
                                 ) from None
        if self.endpoint_url and (self.datapool is None or self.datapool.scheme != "s3"):
            raise ValueError("--endpoint-url applies to an s3:// datapool; pass --datapool s3://bucket/prefix too")
        self._gpu_request = parse_gpu(self.gpu) if self.gpu else None
        if self.relay is not None:
            if self.grace_period > self.relay.ttl / 3:
                raise ValueError(f"--grace-period {self.grace_period}s is more than a third of the relay lease "
                                 f"({self.relay.ttl:g} s): a worker cut off from the commander could not stop its "
                                 f"script in time; give at most {int(self.relay.ttl // 3)}s or a longer TTL")
            if self.num_nodes > 1:
                raise ValueError("a relay worker is one node: drop --num-nodes (or --relay)")
        return self

    # -- derived values ------------------------------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        return self.name or Path(self.script).stem

    @property
    def gpu_request(self) -> GpuRequest | None:
        return self._gpu_request

    @property
    def options(self) -> BaseModel | None:
        """The chosen backend's section, its defaults when the job gives none."""
        return getattr(self, self.backend, None) or entry(self.backend).parse_options(None)

    @property
    def unused_sections(self) -> tuple[str, ...]:
        return self._unused_sections

    @property
    def billed_seconds(self) -> int | None:
        """The longest a machine may run for this job, from submission to the deadline: the max runtime, then the
        grace period and the push timeout (the worst-case price is this x the hourly price). None: no bound."""
        if self.max_runtime is None:
            return None
        return self.max_runtime + self.grace_period + self.push_timeout

    @property
    def memory_bytes(self) -> int | None:
        return parse_size(self.memory) if self.memory else None

    @property
    def disk_bytes(self) -> int | None:
        return parse_size(self.disk) if self.disk else None

    def script_path(self) -> Path:
        return (Path(self.workdir) / self.script).resolve()

    def check_script(self) -> None:
        path = self.script_path()
        if not path.is_file():
            hint = "check the path (it is relative to the project root you launch from)"
            raise UserError(f"script not found: {self.script} ({path}); {hint}")


def _make_job_model() -> type[JobFields]:
    """JobFields plus one optional section per registered backend, typed by that backend's Options."""
    sections = {name: (e.options | None, Field(None, description=f"--backend {name}: {e.summary}"))
                for name, e in entries().items() if e.options is not None}
    return create_model("Job", __base__=JobFields, __module__=__name__, **sections)


Job = _make_job_model()


def build_job(source: str = "job", **fields: Any) -> Job:
    """Job(**fields) with validation errors turned into one clear UserError line."""
    try:
        return Job(**fields)
    except ValidationError as exc:
        raise UserError(explain(exc, source)) from None


def explain(exc: ValidationError, source: str) -> str:
    """One line for the first problem pydantic found, naming the field and the fix."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "job"
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        model, where = Job, ""
        if len(err["loc"]) == 2 and str(err["loc"][0]) in Job.model_fields:  # inside a backend's section
            section = str(err["loc"][0])
            model, where = entry(section).options, f" in the {section}: section"
        return (f"{source}: unknown field '{field}'{where}{did_you_mean(field, model.model_fields)}; "
                f"valid fields: {', '.join(model.model_fields)}")
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"{source}: {msg}" if loc == "job" else f"{source}: field '{loc}': {msg}"
    got = err.get("input")
    desc = Job.model_fields[str(err["loc"][0])].description if err["loc"] and str(err["loc"][0]) in Job.model_fields else ""
    return f"{source}: field '{loc}': {msg.lower()}, got {got!r}" + (f" ({desc})" if desc else "")
