"""The GPU catalog: canonical types, their aliases, and what each backend calls them.

Prices are on-demand list prices (USD/hour, us-east-1 for EC2) as of PRICE_TABLE_DATE; the plan shows them
with that date so nobody mistakes them for a quote.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UserError, did_you_mean

PRICE_TABLE_DATE = "2025-10-01"
MAX_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gb: int
    modal: str  # Modal's gpu string, before ":COUNT"
    k8s_product: str  # value of the node label nvidia.com/gpu.product (GPU feature discovery)
    ec2: dict[int, str]  # GPU count -> instance type
    modal_usd_per_gpu_hour: float
    ec2_usd_per_hour: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


CATALOG: dict[str, GpuType] = {
    g.name: g
    for g in [
        GpuType("T4", 16, "T4", "Tesla-T4",
                {1: "g4dn.xlarge", 4: "g4dn.12xlarge", 8: "g4dn.metal"}, 0.59,
                {"g4dn.xlarge": 0.526, "g4dn.12xlarge": 3.912, "g4dn.metal": 7.824}),
        GpuType("L4", 24, "L4", "NVIDIA-L4",
                {1: "g6.xlarge", 4: "g6.12xlarge", 8: "g6.48xlarge"}, 0.80,
                {"g6.xlarge": 0.805, "g6.12xlarge": 4.602, "g6.48xlarge": 13.35}),
        GpuType("A10G", 24, "A10G", "NVIDIA-A10G",
                {1: "g5.xlarge", 4: "g5.12xlarge", 8: "g5.48xlarge"}, 1.10,
                {"g5.xlarge": 1.006, "g5.12xlarge": 5.672, "g5.48xlarge": 16.288}, ("A10",)),
        GpuType("L40S", 48, "L40S", "NVIDIA-L40S",
                {1: "g6e.xlarge", 4: "g6e.12xlarge", 8: "g6e.48xlarge"}, 1.95,
                {"g6e.xlarge": 1.861, "g6e.12xlarge": 10.493, "g6e.48xlarge": 30.131}),
        GpuType("A100-40GB", 40, "A100-40GB", "NVIDIA-A100-SXM4-40GB",
                {8: "p4d.24xlarge"}, 2.10, {"p4d.24xlarge": 21.96}, ("A100", "A100-40G")),
        GpuType("A100-80GB", 80, "A100-80GB", "NVIDIA-A100-SXM4-80GB",
                {8: "p4de.24xlarge"}, 2.50, {"p4de.24xlarge": 27.45}, ("A100-80G",)),
        GpuType("H100", 80, "H100", "NVIDIA-H100-80GB-HBM3",
                {1: "p5.4xlarge", 8: "p5.48xlarge"}, 3.95, {"p5.4xlarge": 6.88, "p5.48xlarge": 55.04}, ("H100-80GB",)),
        GpuType("H200", 141, "H200", "NVIDIA-H200",
                {8: "p5e.48xlarge"}, 4.54, {"p5e.48xlarge": 63.30}, ("H200-141GB",)),
    ]
}

_BY_NAME = {name.upper(): g for g in CATALOG.values() for name in (g.name, *g.aliases)}


def valid_names() -> list[str]:
    return [n for g in CATALOG.values() for n in (g.name, *g.aliases)]


@dataclass(frozen=True)
class GpuRequest:
    type: GpuType | None  # None: a count alone (`--gpu 2`), the backend's machines decide the type (slurm)
    count: int = 1

    def __str__(self) -> str:
        return str(self.count) if self.type is None else f"{self.type.name}:{self.count}"

    @property
    def modal_spec(self) -> str:
        return self.type.modal if self.count == 1 else f"{self.type.modal}:{self.count}"

    def ec2_instance_type(self) -> str:
        try:
            return self.type.ec2[self.count]
        except KeyError:
            counts = ", ".join(str(c) for c in sorted(self.type.ec2))
            raise UserError(
                f"EC2 has no instance with {self.count}x {self.type.name}; "
                f"valid counts for {self.type.name} on EC2: {counts}"
            ) from None


def parse_gpu(spec: str) -> GpuRequest:
    """`A100` -> A100-40GB x1, `A100-80GB:2`, `H100:8`, `2` -> two of whatever type. Case-insensitive."""
    text = str(spec).strip()
    name, _, count_text = text.partition(":")
    if name.strip().isdigit() and not count_text:
        name, count_text = "", name
        gpu = None
    else:
        gpu = _BY_NAME.get(name.strip().upper())
    if gpu is None and name:
        raise UserError(
            f"unknown GPU '{name}'{did_you_mean(name.upper(), _BY_NAME)}; valid: {', '.join(valid_names())} "
            "(add :COUNT for several, e.g. H100:8)"
        )
    count = 1
    if count_text:
        if not count_text.strip().isdigit():
            raise UserError(f"bad GPU count in '{text}': use TYPE:COUNT with COUNT in 1..{MAX_GPUS_PER_NODE}, e.g. H100:8")
        count = int(count_text)
    if not 1 <= count <= MAX_GPUS_PER_NODE:
        raise UserError(f"impossible GPU count {count} in '{text}': one node holds 1..{MAX_GPUS_PER_NODE} GPUs")
    return GpuRequest(gpu, count)
