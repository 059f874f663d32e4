"""Uploads a committed checkpoint folder of a relay run to the Hugging Face Hub, from the worker.

    upload_checkpoint(folder, "org/name", path_in_repo="checkpoints/checkpoint-40", dry_run=False, say=print)

The token is HF_TOKEN (none: anonymous, which only a private/fake endpoint accepts); the endpoint is HF_ENDPOINT
(default https://huggingface.co), read at call time. huggingface_hub reads both, and its other settings, into
`huggingface_hub.constants` once, when it is first imported, so this module does not rely on that: it passes the
endpoint and token explicitly and sets the few switches it needs on `constants` for the duration of the call:

  * HF_HUB_DISABLE_XET: with `hf_xet` installed, `upload_folder` goes through the streamed Xet pipeline (chunks sent
    to a Xet CAS server the Hub names). Forced off, it makes one plain commit: `preupload` sorts the files into
    "regular" (sent inline, base64, in the ndjson commit) and "lfs" (LFS batch API, then a PUT to the URL it gives),
    which the Hub still accepts and which a small fake server can serve.
  * HF_HUB_DISABLE_TELEMETRY and progress bars off: one line per upload in the worker's log, nothing else.

Any failure is a RuntimeError with one line; the worker logs it and goes on (the Hub never fails training).
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_STEP = re.compile(r"checkpoint-(\d+)$")
_DEFAULT_ENDPOINT = "https://huggingface.co"
_LOCK = threading.Lock()  # the constants below are process-wide: one upload at a time


def _files(folder: Path) -> list[tuple[str, int]]:
    """(path relative to `folder`, size) of what `upload_folder` sends: every file but .git/ and
    .cache/huggingface/ (huggingface_hub's DEFAULT_IGNORE_PATTERNS), sorted as it sorts them."""
    out = []
    for p in sorted(folder.glob("**/*")):
        rel = p.relative_to(folder).as_posix()
        if ".git" in rel.split("/") or f"/{rel}/".find("/.cache/huggingface/") >= 0:
            continue
        if p.is_file():
            out.append((rel, p.stat().st_size))
    return out


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception (huggingface_hub's messages run over several)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "") or type(exc).__name__
    return line[:300]


def _describe(exc: BaseException) -> tuple[int | None, str]:
    """(HTTP status, one line) for an exception from huggingface_hub, whose HTTP error may sit in the chain of
    causes (an LFS upload failure is a RuntimeError caused by an HfHubHTTPError)."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    http = next((e for e in chain if getattr(getattr(e, "response", None), "status_code", None)), None)
    status = http.response.status_code if http is not None else None
    line = _one_line(exc)
    if http is not None and http is not exc:
        line = f"{line}: {_one_line(http)}"
    elif http is None and len(chain) > 1 and _one_line(chain[-1]) not in line:
        line = f"{line}: {_one_line(chain[-1])}"  # e.g. a connection error under a retry wrapper
    said = (getattr(http, "server_message", None) or "").strip().replace("\n", " ")
    if said and said not in line:
        line = f"{line} ({said[:200]})"
    if status is not None and str(status) not in line:
        line = f"HTTP {status}: {line}"
    return status, line


def upload_checkpoint(folder: Path, repo: str, *, path_in_repo: str, dry_run: bool, say) -> None:
    folder = Path(folder)
    path_in_repo = path_in_repo.strip("/")
    if not folder.is_dir():
        raise RuntimeError(f"Hub upload to {repo}/{path_in_repo}: {folder} is not a folder")
    files = _files(folder)
    total = sum(size for _, size in files)
    m = _STEP.search(folder.name)
    step = f"step {m.group(1)}" if m else folder.name
    what = f"{len(files)} files, {_size(total)}"
    if dry_run:
        names = ", ".join(name for name, _ in files[:5]) + (f", ... ({len(files) - 5} more)" if len(files) > 5 else "")
        say(f"hub (dry run): would upload {folder.name} ({step}) to {repo} at {path_in_repo}/: {what}: {names}")
        return

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise RuntimeError(f"Hub upload of {folder.name} to {repo}: HF_HUB_OFFLINE is set in the worker's "
                           "environment; set HF_HUB_OFFLINE=0 there (worker.env) to upload")
    token = os.environ.get("HF_TOKEN") or None
    endpoint = (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    where = f"{repo}/{path_in_repo}" + (f" at {endpoint}" if endpoint else "")
    try:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError as exc:
        raise RuntimeError(f"Hub upload to {where}: huggingface_hub is not installed ({exc}); "
                           f"pip install huggingface_hub") from None

    say(f"hub: uploading {folder.name} ({step}, {what}) to {where}")
    with _LOCK:
        saved = {k: getattr(constants, k) for k in ("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
        bars_were_off = are_progress_bars_disabled()
        try:
            constants.HF_HUB_DISABLE_XET = True  # is_xet_available() reads it at call time
            constants.HF_HUB_DISABLE_TELEMETRY = True
            # Read at import from HF_HUB_OFFLINE *or* TRANSFORMERS_OFFLINE; HF_HUB_OFFLINE (checked above) decides.
            constants.HF_HUB_OFFLINE = False
            if not bars_were_off:
                disable_progress_bars()
            # token=False, not None: no look-up of a saved token / OIDC exchange; no Authorization header.
            # the endpoint always explicit: constants.ENDPOINT is HF_ENDPOINT as it was at import time
            api = HfApi(endpoint=endpoint or _DEFAULT_ENDPOINT, token=token or False)
            api.create_repo(repo, repo_type="model", private=True, exist_ok=True)
            info = api.upload_folder(repo_id=repo, repo_type="model", folder_path=folder, path_in_repo=path_in_repo,
                                     commit_message=f"relay: {step} ({folder.name}) -> {path_in_repo}")
        except Exception as exc:  # noqa: BLE001 - anything the client or the network raises
            status, line = _describe(exc)
            if status in (401, 403):
                line += " (HF_TOKEN is not set)" if not token else f" (check that HF_TOKEN may write to {repo})"
            raise RuntimeError(f"Hub upload of {folder.name} to {where} failed: {line}") from exc
        finally:
            for k, v in saved.items():
                setattr(constants, k, v)
            if not bars_were_off:
                enable_progress_bars()
    say(f"hub: uploaded {folder.name} to {repo}/{path_in_repo} (commit {str(getattr(info, 'oid', '') or '')[:10]})")
