"""The EC2 test endpoint itself: moto refuses what AWS would refuse, and capacity errors arrive as botocore sees
them from AWS. The ec2 backend's tests stand on these."""
from __future__ import annotations

import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from .ec2moto import GPU_AMI_PARAM, MOTO_VALIDATION_ENV, seed_ami_parameter, some_ami


@pytest.fixture
def ec2(ec2_moto):
    return ec2_moto.client("ec2")


@pytest.fixture
def ssm(ec2_moto):
    return ec2_moto.client("ssm")


def run(ec2, ami, az=None, itype="g5.xlarge", **kw):
    if az:
        kw["Placement"] = {"AvailabilityZone": az}
    return ec2.run_instances(ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=1, **kw)["Instances"][0]


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_availability_zones(ec2):
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert sorted(z["ZoneName"] for z in zones) == [f"us-east-1{c}" for c in "abcdef"]


def test_some_ami_is_a_linux_image_moto_holds(ec2):
    ami = some_ami(ec2)
    [image] = ec2.describe_images(ImageIds=[ami])["Images"]
    assert (image["Architecture"], image["RootDeviceType"], image["VirtualizationType"]) == ("x86_64", "ebs", "hvm")
    assert image.get("Platform") != "windows"


def test_run_instances_with_a_known_ami_and_type(ec2):
    inst = run(ec2, some_ami(ec2), "us-east-1b")
    assert inst["InstanceType"] == "g5.xlarge"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1b"
    [r] = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"]
    assert r["Instances"][0]["ImageId"] == some_ami(ec2)


@pytest.mark.parametrize("ami, code", [("ami-0000000000000dead", "InvalidAMIID.NotFound"),
                                       ("not-an-ami", "InvalidAMIID.Malformed")])
def test_unknown_ami_is_refused(ec2, ami, code):
    with pytest.raises(ClientError) as e:
        run(ec2, ami)
    assert error_code(e) == code


def test_unknown_instance_type_is_refused(ec2):
    assert MOTO_VALIDATION_ENV["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"]
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), itype="g9.huge")
    assert error_code(e) == "InvalidInstanceType.NotFound"


def test_unknown_key_pair_is_refused_and_a_created_one_works(ec2):
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), KeyName="never-created")
    assert error_code(e) == "InvalidKeyPair.NotFound"
    ec2.create_key_pair(KeyName="infra-test-key")
    assert run(ec2, some_ami(ec2), KeyName="infra-test-key")["KeyName"] == "infra-test-key"


def test_az_outside_the_region_is_refused(ec2):
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), "us-west-2a")
    assert error_code(e) == "InvalidParameterValue"


def test_ice_for_a_configured_az_only(ec2_moto, ec2):
    ami = some_ami(ec2)
    ec2_moto.set_capacity(ice_azs=["us-east-1a", "us-east-1c"])
    for az in ("us-east-1a", "us-east-1c"):
        with pytest.raises(ClientError) as e:
            run(ec2, ami, az)
        assert error_code(e) == "InsufficientInstanceCapacity"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert f"g5.xlarge capacity in the Availability Zone you requested ({az})" in str(e.value)
    assert run(ec2, ami, "us-east-1b")["Placement"]["AvailabilityZone"] == "us-east-1b"
    # Not RunInstances: untouched even in an ICE'd AZ.
    assert ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "location", "Values": ["us-east-1a"]},
                                                   {"Name": "instance-type", "Values": ["g5.xlarge"]}],
    )["InstanceTypeOfferings"]
    assert [(c["az"], c["error"]) for c in ec2_moto.run_instances_calls()] == [
        ("us-east-1a", "InsufficientInstanceCapacity"), ("us-east-1c", "InsufficientInstanceCapacity"),
        ("us-east-1b", None)]


def test_rules_are_reread_per_request(ec2_moto, ec2):
    ami = some_ami(ec2)
    ec2_moto.set_capacity(ice_azs=["us-east-1d"])
    with pytest.raises(ClientError):
        run(ec2, ami, "us-east-1d")
    ec2_moto.clear_rules()
    assert run(ec2, ami, "us-east-1d")["Placement"]["AvailabilityZone"] == "us-east-1d"


def test_ice_by_instance_type_and_market(ec2_moto, ec2):
    ami = some_ami(ec2)
    ec2_moto.set_capacity(ice_azs=["us-east-1a"], ice_instance_types=["g5.xlarge"], market="spot")
    spot = {"InstanceMarketOptions": {"MarketType": "spot"}}
    with pytest.raises(ClientError) as e:
        run(ec2, ami, "us-east-1a", **spot)
    assert error_code(e) == "InsufficientInstanceCapacity"
    run(ec2, ami, "us-east-1a")  # on-demand
    run(ec2, ami, "us-east-1a", itype="g5.2xlarge", **spot)
    assert [(c["market"], c["instance_type"], c["error"]) for c in ec2_moto.run_instances_calls()] == [
        ("spot", "g5.xlarge", "InsufficientInstanceCapacity"), ("on-demand", "g5.xlarge", None),
        ("spot", "g5.2xlarge", None)]


def test_ice_matches_the_subnets_az(ec2_moto, ec2):
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    sub_e = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24", AvailabilityZone="us-east-1e")["Subnet"]["SubnetId"]
    sub_f = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.2.0/24", AvailabilityZone="us-east-1f")["Subnet"]["SubnetId"]
    ec2_moto.set_capacity(ice_azs=["us-east-1e"])
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), SubnetId=sub_e)
    assert error_code(e) == "InsufficientInstanceCapacity"
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": sub_e}])
    assert error_code(e) == "InsufficientInstanceCapacity"
    assert run(ec2, some_ami(ec2), SubnetId=sub_f)["Placement"]["AvailabilityZone"] == "us-east-1f"


def test_vcpu_limit(ec2_moto, ec2):
    ec2_moto.set_capacity(vcpu_limit=True)
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), "us-east-1b")
    assert error_code(e) == "VcpuLimitExceeded"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "vCPU limit" in e.value.response["Error"]["Message"]


def test_capacity_comes_back_after_times(ec2_moto, ec2):
    ami = some_ami(ec2)
    ec2_moto.set_rules([{"code": "InsufficientInstanceCapacity", "azs": ["us-east-1a"], "times": 2}])
    for _ in range(2):
        with pytest.raises(ClientError):
            run(ec2, ami, "us-east-1a")
    run(ec2, ami, "us-east-1a")


def test_botocore_retries_ice_as_it_does_against_aws(ec2_moto):
    # A 5xx, so a default-configured client retries it; the launcher sees the count in the call log.
    ec2 = ec2_moto.client("ec2", max_attempts=2)
    ec2_moto.set_capacity(ice_azs=["us-east-1a"])
    with pytest.raises(ClientError) as e:
        run(ec2, some_ami(ec2), "us-east-1a")
    assert error_code(e) == "InsufficientInstanceCapacity"
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(ec2_moto.run_instances_calls()) == 2


def test_rules_do_not_leak_between_tests(ec2_moto, ec2):
    assert ec2_moto.run_instances_calls() == []
    run(ec2, some_ami(ec2), "us-east-1a")


def test_ssm_parameter_seeding(ec2, ssm):
    ami = seed_ami_parameter(ec2, ssm)
    assert ami == some_ami(ec2)
    param = ssm.get_parameter(Name=GPU_AMI_PARAM)["Parameter"]
    assert (param["Value"], param["DataType"]) == (ami, "aws:ec2:image")
    other = seed_ami_parameter(ec2, ssm, "/launcher-test/ami/other", ami_id=some_ami(ec2, "arm64"))
    assert ssm.get_parameter(Name="/launcher-test/ami/other")["Parameter"]["Value"] == other != ami
    # The AMI a parameter names launches with AMI validation on.
    assert run(ec2, ssm.get_parameter(Name=GPU_AMI_PARAM)["Parameter"]["Value"])["ImageId"] == ami


def test_a_subprocess_reaches_only_the_test_endpoint(ec2_env, ec2_moto):
    probe = ("import boto3; s = boto3.session.Session(); c = s.client('ec2');"
             "print(c.meta.endpoint_url, s.region_name, len(c.describe_availability_zones()['AvailabilityZones']))")
    out = subprocess.run([sys.executable, "-c", probe], env=ec2_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [ec2_moto.endpoint, "us-east-1", "6"]
    assert not any(k.startswith("AWS_") and k not in ec2_moto.aws_env(".") for k in ec2_env)


def test_reset_forgets_state_but_keeps_the_builtin_amis(ec2_moto, ec2, ssm):
    seed_ami_parameter(ec2, ssm, "/launcher-test/ami/reset")
    run(ec2, some_ami(ec2))
    ec2_moto.reset()
    assert ec2.describe_instances()["Reservations"] == []
    with pytest.raises(ClientError):
        ssm.get_parameter(Name="/launcher-test/ami/reset")
    run(ec2, some_ami(ec2))


def test_other_services_pass_through_with_their_bodies(ec2_moto):
    # The same endpoint can hold a datapool bucket; the middleware must not touch non-EC2 request bodies.
    ec2_moto.set_capacity(ice_azs=["us-east-1a"], vcpu_limit=True)
    s3 = ec2_moto.client("s3")
    s3.create_bucket(Bucket="ec2-infra")
    payload = bytes(range(256)) * 4096
    s3.put_object(Bucket="ec2-infra", Key="blob", Body=payload)
    assert s3.get_object(Bucket="ec2-infra", Key="blob")["Body"].read() == payload
    assert ec2_moto.run_instances_calls() == []
