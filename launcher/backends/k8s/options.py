"""The `k8s:` section of a profile and the flags that set it (`--context`, `--namespace`, `--image`).

Kept apart from the backend so the registry's entry can be read without importing the backend or `kubernetes`.
`--pending-timeout`, `--torchrun` and `--num-nodes` are core Job fields: other backends honour them too.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import UserError
from ...units import parse_duration
from ..entry import Flag

MAX_NODES = 64
FLAGS = (
    Flag("--context", "context", "kubeconfig context (default: the current one)", metavar="NAME"),
    Flag("--namespace", "namespace", "namespace (default: the context's)", metavar="NAME"),
    Flag("--image", "image", "container image (default: the one built from images/requirements.lock)",
         metavar="REPO:TAG"),
)
# Where each provider's nodes say which GPU they carry (values per type: request.GPU_LABEL_VALUES).
GFD_LABEL = "nvidia.com/gpu.product"  # NVIDIA GPU feature discovery's label: the default
GPU_LABEL_KEYS = (GFD_LABEL, "cloud.google.com/gke-accelerator", "karpenter.k8s.aws/instance-gpu-name")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class K8sOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: str | None = Field(None, description="kubeconfig context (default: the current one)")
    namespace: str | None = Field(None, description="namespace (default: the context's, else default)")
    image: str | None = Field(None, description="container image with Python and launcher's dependencies "
                                                "(default: the image built from images/requirements.lock)")
    python: str = Field("", description="interpreter in the image (default: its python3)")
    gpu_label_key: str = Field(GFD_LABEL, description="node label naming the GPU: "
                               + ", ".join(GPU_LABEL_KEYS))
    gpu_label_value: str | None = Field(None, description="override the label value picked from --gpu")
    ttl_after_finished: int = Field(3600, description="how long a finished Job (and its pods' logs) stays")
    service_account: str | None = Field(None, description="service account the pods run as")
    secret_name: str | None = Field(None, description="an existing Secret in the namespace holding the --secret keys "
                                                      "(default: one made from your environment, owned by the Job)")
    master_port: int = Field(29500, ge=1024, le=65535, description="torchrun rendezvous port on pod 0")

    @field_validator("namespace", "service_account")
    @classmethod
    def _label(cls, v: str | None, info) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError(f"bad {info.field_name.replace('_', ' ')} {v!r}: lowercase letters, digits and '-', "
                             "at most 63, e.g. ml-jobs")
        return v

    @field_validator("secret_name")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is not None and not _DNS_SUBDOMAIN.match(v):
            raise ValueError(f"bad secret name {v!r}: a Kubernetes name (lowercase letters, digits, '-', '.')")
        return v

    @field_validator("gpu_label_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v):
            raise ValueError(f"bad gpu_label_key {v!r}: a node label key, e.g. " + " or ".join(GPU_LABEL_KEYS))
        return v

    @field_validator("ttl_after_finished", mode="before")
    @classmethod
    def _duration(cls, v: Any, info) -> int:
        try:
            return parse_duration(v, info.field_name.replace("_", "-"))
        except UserError as e:
            raise ValueError(str(e.args[0])) from None
