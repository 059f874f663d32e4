"""What `launch --dry-run --backend ec2` renders, offline: the instance choice, the RunInstances request (checked
against botocore's own service model, since moto accepts invalid values), the price and the one deadline."""
from __future__ import annotations

import base64

import pytest
import yaml

from launcher.backends.slots import fill, slots_in

from .servicemodel import check_request

HELLO = "print('hello')\n"


@pytest.fixture
def dry(launch, project, tmp_path):
    (project / "hello.py").write_text(HELLO)
    offline = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

    def _dry(*args):
        out = launch("--dry-run", "-o", "yaml", "--backend", "ec2", "--datapool", "s3://bucket/pool", *args, "hello.py", env=offline)
        return out

    return _dry


@pytest.mark.parametrize("gpu,itype", [("A10G", "g5.xlarge"), ("A10G:4", "g5.12xlarge"), ("L4", "g6.xlarge"),
                                       ("L40S", "g6e.xlarge"), ("T4", "g4dn.xlarge"), ("A100:8", "p4d.24xlarge"),
                                       ("H100:8", "p5.48xlarge")])
def test_gpu_picks_the_instance_type(dry, gpu, itype):
    out = dry("--gpu", gpu)
    assert out.returncode == 0, out.stderr
    plan = yaml.safe_load(out.stdout)
    assert plan["request"]["RunInstances"]["InstanceType"] == itype
    assert plan["price"]["instance_type"] == itype and plan["price"]["usd_per_hour"] > 0


def test_impossible_count_lists_what_ec2_offers(dry):
    out = dry("--gpu", "A100:3")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "valid counts for A100-40GB on EC2: 8" in out.stderr


def test_instance_type_override_and_cpu_default(dry):
    plan = yaml.safe_load(dry("--instance-type", "g6.12xlarge").stdout)
    assert plan["request"]["RunInstances"]["InstanceType"] == "g6.12xlarge"
    cpu = yaml.safe_load(dry("--cpus", "8").stdout)["request"]
    assert cpu["RunInstances"]["InstanceType"] == "m7i.2xlarge" and "canonical/ubuntu" in cpu["AmiParameter"]


def test_run_instances_is_valid_for_botocore_and_holds_the_guarantees(dry):
    out = dry("--gpu", "A10G", "--spot", "--max-runtime", "6h", "--disk", "200Gi", "--zone", "us-east-1b")
    assert out.returncode == 0, out.stderr
    plan = yaml.safe_load(out.stdout)
    req = plan["request"]["RunInstances"]
    # The slots filled the way submit fills them, then the whole request against the service model.
    assert slots_in(plan["request"]) == {"image_id", "security_group", "region", "snapshot_url", "result_url",
                                         "uv_sha", "uv_url", "venv_url", "venv_put_url"}
    sent = fill(plan["request"], {"image_id": "ami-0123456789abcdef0", "security_group": "sg-0123456789abcdef0",
                                  "region": "us-east-1", "snapshot_url": "https://s3/c", "result_url": "https://s3/r",
                                  "uv_sha": "0" * 64, "uv_url": "https://s3/u", "venv_url": "https://s3/v",
                                  "venv_put_url": "https://s3/p"})
    sent = sent["RunInstances"]
    sent["UserData"] = base64.b64encode(sent["UserData"].encode()).decode()  # as boto3 encodes it
    assert check_request("ec2", "RunInstances", sent) == []
    assert plan["request"]["AmiParameter"].startswith("/aws/service/deeplearning/")
    assert req["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert req["MetadataOptions"]["HttpTokens"] == "required" and req["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert req["ClientToken"] == plan["job_id"]
    ebs = req["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["VolumeSize"], ebs["VolumeType"], ebs["Encrypted"], ebs["DeleteOnTermination"]) == (200, "gp3", True,
                                                                                                   True)
    assert req["InstanceMarketOptions"]["SpotOptions"] == {"SpotInstanceType": "one-time",
                                                          "InstanceInterruptionBehavior": "terminate"}
    assert req["Placement"] == {"AvailabilityZone": "us-east-1b"}
    kinds = {t["ResourceType"]: {x["Key"]: x["Value"] for x in t["Tags"]} for t in req["TagSpecifications"]}
    assert set(kinds) == {"instance", "volume", "spot-instances-request"}
    for tags in kinds.values():
        assert tags["launcher:job"] == plan["job_id"] and int(tags["launcher:deadline"]) == int(plan["deadline_at"])
    # The node's dead-man switch and the agent derive from the same deadline as the tags.
    assert f"DEADMAN_AT={int(plan['deadline_at']) + 60}" in req["UserData"]
    assert '"deadline_at": ' + str(plan["deadline_at"]) in req["UserData"]
    # To the deadline: 6 h, the 30 s grace period and the 300 s push timeout.
    assert plan["price"]["worst_case_usd"] == round(1.006 * (6 * 3600 + 30 + 300) / 3600, 2)
    assert plan["price"]["market"] == "spot"


def test_bad_ec2_fields_are_refused(dry):
    out = dry("--zone", "us-east")
    assert out.returncode == 2 and "availability zone" in out.stderr
    out = dry("--ami", "ubuntu")
    assert out.returncode == 2 and "bad AMI" in out.stderr
