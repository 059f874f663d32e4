"""The GPU catalog: canonical types, their aliases and memory: what is the GPU's own, nothing a platform decides.

What a backend calls a type, which machine carries it and what it costs is that backend's own table, keyed by the
catalog name, in its package, with its prices' date (tests/test_gpus.py checks each table names catalog GPUs only).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError, did_you_mean

MAX_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gb: int
    aliases: tuple[str, ...] = ()


CATALOG: dict[str, GpuType] = {
    g.name: g
    for g in [
        GpuType("T4", 16),
        GpuType("L4", 24),
        GpuType("A10G", 24, ("A10",)),
        GpuType("L40S", 48),
        GpuType("A100-40GB", 40, ("A100", "A100-40G")),
        GpuType("A100-80GB", 80, ("A100-80G",)),
        GpuType("H100", 80, ("H100-80GB",)),
        GpuType("H200", 141, ("H200-141GB",)),
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
