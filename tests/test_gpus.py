import pytest

from launcher.errors import UserError
from launcher.gpus import CATALOG, parse_gpu


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
    assert parse_gpu("A10G").ec2_instance_type() == "g5.xlarge"
    assert parse_gpu("A10G:4").ec2_instance_type() == "g5.12xlarge"
    assert parse_gpu("A10G:8").ec2_instance_type() == "g5.48xlarge"
    assert parse_gpu("T4").ec2_instance_type().startswith("g4dn.")
    assert parse_gpu("L4").ec2_instance_type().startswith("g6.")
    assert parse_gpu("L40S").ec2_instance_type().startswith("g6e.")
    assert parse_gpu("A100:8").ec2_instance_type() == "p4d.24xlarge"
    assert parse_gpu("A100-80GB:8").ec2_instance_type() == "p4de.24xlarge"
    assert parse_gpu("H100:8").ec2_instance_type() == "p5.48xlarge"
    assert parse_gpu("A100").modal_spec == "A100-40GB"
    assert parse_gpu("H100:8").modal_spec == "H100:8"
    assert parse_gpu("H100").type.k8s_product == "NVIDIA-H100-80GB-HBM3"
    for gpu in CATALOG.values():
        assert gpu.memory_gb > 0 and gpu.k8s_product and gpu.ec2
        for itype in gpu.ec2.values():
            assert itype in gpu.ec2_usd_per_hour  # every instance type has a price


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
        parse_gpu("A10G:2").ec2_instance_type()
    assert "1, 4, 8" in str(e.value)
