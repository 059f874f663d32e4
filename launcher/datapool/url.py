"""`StoreUrl`: a datapool store's URL, parsed and checked once.

It is a `str` (it prints, serialises and compares as the URL the user gave), carrying its parts: the Job parses it
when the job is built and every reader takes the parts from it instead of parsing again. Text from a file or the
AgentSpec becomes one with `StoreUrl.of(text)` at the boundary. Stdlib only: the agent imports it on the node.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

# Stores the datapool can bind to; s3 comes with the sync engine, the others with their backends (pvc:// is only
# mounted by nodes, modal-volume:// is a Modal Volume, sftp:// a folder on a box you can ssh into: datapool/sftp.py).
SCHEMES = ("file", "s3", "pvc", "modal-volume", "sftp")
EXAMPLES = {"file": "file:///shared/pool", "s3": "s3://my-bucket/pool", "pvc": "pvc://team-pool/datapool",
             "modal-volume": "modal-volume://team-pool/datapool", "sftp": "sftp://ubuntu@gpu-box/~/.launcher-node/pool"}
_NAMED = {"s3": "the bucket", "pvc": "the claim", "modal-volume": "the volume", "sftp": "the host"}


class StoreUrl(str):
    scheme: str
    netloc: str  # the bucket, claim or volume ([user@]host[:port] for sftp://); "" for file://
    path: str  # unquoted; absolute for file://

    def __new__(cls, text: str) -> "StoreUrl":
        text = str(text).strip()
        if text.startswith("/"):
            text = Path(text).as_uri()
        url = urlparse(text)
        scheme = url.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"unsupported datapool URL {text!r}: use one of "
                             + ", ".join(f"{s}://" for s in SCHEMES) + " (e.g. file:///data/pool or s3://bucket/prefix)")
        if scheme == "file" and (url.netloc not in ("", "localhost") or not url.path.startswith("/")):
            raise ValueError(f"bad datapool URL {text!r}: a file URL needs an absolute path, e.g. file:///data/pool")
        if scheme != "file" and not url.netloc:
            raise ValueError(f"bad datapool URL {text!r}: name {_NAMED[scheme]}, e.g. {EXAMPLES[scheme]}")
        if scheme == "sftp":
            from .sftp import parse

            parse(text)  # the ssh target, the folder (`/~/...`: under the home) and the query, checked here once
        self = super().__new__(cls, text)
        self.scheme, self.netloc, self.path = scheme, url.netloc if scheme != "file" else "", unquote(url.path)
        return self

    @classmethod
    def of(cls, text: "str | StoreUrl | None") -> "StoreUrl | None":
        """`text` as a StoreUrl (itself when it is one already); None stays None."""
        return text if text is None or isinstance(text, StoreUrl) else cls(text)

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        """A pydantic field typed StoreUrl takes text, parses it once and serialises as the text (pydantic is
        imported here only when a model is built: the node side stays stdlib)."""
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(
            lambda v: cls.of(v) if isinstance(v, str) else v, core_schema.is_instance_schema(cls),
            serialization=core_schema.plain_serializer_function_ser_schema(str))

    @property
    def prefix(self) -> str:
        """The folder inside the bucket or volume, without slashes at either end."""
        return self.path.strip("/")

    def under(self, *parts: str) -> str:
        """The prefix joined with more folders (empty parts dropped)."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
