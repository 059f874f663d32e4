"""The GPU catalog holds what is the GPU's own; each backend's table (what it calls a type, the machine, the price)
lives in its package, keyed by the catalog name."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from launcher.backends import entries
from launcher.backends.ec2 import catalog as ec2_catalog
from launcher.backends.k8s import request as k8s_request
from launcher.backends.modal import request as modal_request
from launcher.errors import UserError
from launcher.gpus import CATALOG, parse_gpu

from .backend_names import backend_words

GPUS_PY = Path(__file__).resolve().parents[1] / "launcher" / "gpus.py"


@pytest.mark.parametrize("spec,name,count", [
    ("A100", "A100-40GB", 1),
    ("a100-80gb:2", "A100-80GB", 2),
    ("H100:8", "H100", 8),
    ("A10G", "A10G", 1),
    ("L40S:4", "L40S", 4),
    ("t4", "T4", 1),
])
def test_parse_aliases_and_counts(spec, name, count):
    req = parse_gpu(spec)
    assert (req.type.name, req.count) == (name, count)


def test_backend_names():
    ec2 = ec2_catalog.gpu_instance_type
    assert ec2(parse_gpu("A10G")) == "g5.xlarge"
    assert ec2(parse_gpu("A10G:4")) == "g5.12xlarge"
    assert ec2(parse_gpu("A10G:8")) == "g5.48xlarge"
    assert ec2(parse_gpu("T4")).startswith("g4dn.")
    assert ec2(parse_gpu("L4")).startswith("g6.")
    assert ec2(parse_gpu("L40S")).startswith("g6e.")
    assert ec2(parse_gpu("A100:8")) == "p4d.24xlarge"
    assert ec2(parse_gpu("A100-80GB:8")) == "p4de.24xlarge"
    assert ec2(parse_gpu("H100:8")) == "p5.48xlarge"
    assert ec2_catalog.usd_per_hour("p5.48xlarge") == 55.04 and ec2_catalog.usd_per_hour("m7i.large") == 0.1008
    assert modal_request.gpu_spec(parse_gpu("A100")) == "A100-40GB"
    assert modal_request.gpu_spec(parse_gpu("H100:8")) == "H100:8"
    assert k8s_request.GPU_LABEL_VALUES[k8s_request.GFD_LABEL]["H100"] == "NVIDIA-H100-80GB-HBM3"
    for gpu in CATALOG.values():
        assert gpu.memory_gb > 0


def _capabilities(backend: str):
    module, _, cls = entries()[backend].cls.partition(":")
    return getattr(importlib.import_module(module), cls).capabilities


def test_every_backend_offers_catalog_gpus_only():
    for name in entries():
        gpus = _capabilities(name).gpus
        assert gpus is None or (gpus and set(gpus) <= set(CATALOG)), (name, gpus)


# Each backend table keyed by catalog name: (backend, table, whether it must have a row for every GPU offered).
TABLES = [
    ("ec2", ec2_catalog.GPU_INSTANCES, True),
    ("modal", modal_request.GPUS, True),
    *[("k8s", values, key == k8s_request.GFD_LABEL) for key, values in k8s_request.GPU_LABEL_VALUES.items()],
]


@pytest.mark.parametrize("backend,table,complete", TABLES, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(TABLES)])
def test_backend_tables_are_keyed_by_the_catalog(backend, table, complete):
    assert set(table) <= set(CATALOG), f"{backend}: not in launcher/gpus.py: {sorted(set(table) - set(CATALOG))}"
    offered = _capabilities(backend).gpus
    assert offered, backend
    if complete:
        assert [g for g in offered if not table.get(g)] == [], f"{backend} offers a GPU its table has no row for"
    assert all(table.values()), backend


def test_the_backends_tables_are_whole():
    assert _capabilities("ec2").gpus == ec2_catalog.gpus_offered() == tuple(CATALOG)
    for counts in ec2_catalog.GPU_INSTANCES.values():
        for count, itype in counts.items():
            assert 1 <= count <= 8 and itype in ec2_catalog.GPU_USD_PER_HOUR  # every instance type has a price
    assert set(ec2_catalog.GPU_USD_PER_HOUR) == {t for c in ec2_catalog.GPU_INSTANCES.values() for t in c.values()}
    assert _capabilities("modal").gpus == tuple(modal_request.GPUS) == tuple(CATALOG)
    assert all(g.name and g.usd_per_gpu_hour > 0 for g in modal_request.GPUS.values())
    assert _capabilities("k8s").gpus == tuple(k8s_request.GPU_LABEL_VALUES[k8s_request.GFD_LABEL]) == tuple(CATALOG)


def test_the_checker_finds_backend_names():
    code = ('"""ec2 in a docstring"""\n# k8s in a comment\n'
            'class G:\n    modal: str\n    ec2_usd_per_hour: dict\n'
            'def ec2_instance_type(self):\n    raise E(f"EC2 has no {self.type.k8s_product}")\n'
            'x = g.slurm_gres\n')
    assert sorted(w.lower() for w in backend_words(code)) == ["ec2", "ec2", "ec2", "k8s", "modal", "slurm"]


def test_the_catalog_names_no_backend():
    assert backend_words(GPUS_PY.read_text()) == [], "launcher/gpus.py names a backend: put it in the backend's table"


def test_unknown_type_lists_valid_choices():
    with pytest.raises(UserError) as e:
        parse_gpu("A1000")
    msg = str(e.value)
    assert "unknown GPU 'A1000'" in msg and "H100" in msg and "A10G" in msg


@pytest.mark.parametrize("spec", ["H100:0", "H100:9", "H100:two", "A10G:-1"])
def test_impossible_count(spec):
    with pytest.raises(UserError) as e:
        parse_gpu(spec)
    assert "1..8" in str(e.value)


def test_count_without_ec2_instance_lists_valid_counts():
    with pytest.raises(UserError) as e:
        ec2_catalog.gpu_instance_type(parse_gpu("A10G:2"))
    assert str(e.value) == "EC2 has no instance with 2x A10G; valid counts for A10G on EC2: 1, 4, 8"
