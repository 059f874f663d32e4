"""check_request: botocore's model as the judge of a request the launcher builds, including what boto3 lets through."""
from __future__ import annotations

import copy

import pytest

from .servicemodel import check_request

GOOD = {
    "ImageId": "ami-0123456789abcdef0",
    "InstanceType": "g5.xlarge",
    "MinCount": 1,
    "MaxCount": 1,
    "KeyName": "launcher-test",
    "Placement": {"AvailabilityZone": "us-east-1a"},
    "InstanceInitiatedShutdownBehavior": "terminate",
    "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
    "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 200, "VolumeType": "gp3",
                                                                 "DeleteOnTermination": True}}],
    "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
    "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "launcher:job", "Value": "j-1"}]}],
    "UserData": "#!/bin/sh\necho hi\n",
    "IamInstanceProfile": {"Name": "launcher-node"},
}


def with_change(path: str, value) -> dict:
    req = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = req
    for p in parents:
        node = node[p]
    node[last] = value
    return req


def test_good_run_instances_passes():
    assert check_request("ec2", "RunInstances", GOOD) == []


def test_operation_without_input_members():
    assert check_request("ec2", "DescribeAvailabilityZones", {}) == []


@pytest.mark.parametrize("path, value, expect", [
    ("Bogus", 1, ['Unknown parameter in input: "Bogus"']),
    ("InstanceType", "g9.huge", ["RunInstances.InstanceType: 'g9.huge' is not one of"]),
    ("MetadataOptions.HttpTokens", "maybe", ["RunInstances.MetadataOptions.HttpTokens: 'maybe' is not one of",
                                             "'optional'", "'required'"]),
    ("InstanceInitiatedShutdownBehavior", "hibernate",
     ["RunInstances.InstanceInitiatedShutdownBehavior: 'hibernate' is not one of ['stop', 'terminate']"]),
    ("MinCount", "1", ["Invalid type for parameter MinCount", "<class 'str'>"]),
    ("MaxCount", True, ["RunInstances.MaxCount: True is a bool where botocore expects integer"]),
    ("Placement", "us-east-1a", ["Invalid type for parameter Placement"]),
    ("TagSpecifications", {"ResourceType": "instance"}, ["Invalid type for parameter TagSpecifications"]),
])
def test_each_problem_is_reported(path, value, expect):
    problems = check_request("ec2", "RunInstances", with_change(path, value))
    assert len(problems) == 1, problems
    for fragment in expect:
        assert fragment in problems[0]
    assert problems[0].startswith("RunInstances")


def test_missing_required_members():
    req = {k: v for k, v in GOOD.items() if k not in ("MinCount", "MaxCount")}
    problems = check_request("ec2", "RunInstances", req)
    assert sorted(problems) == ['RunInstances: Missing required parameter in input: "MaxCount"',
                                'RunInstances: Missing required parameter in input: "MinCount"']


def test_all_problems_at_once_and_nested_enums_in_lists():
    req = with_change("InstanceType", "g9.huge")
    req["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] = "gp9"
    req["TagSpecifications"][0]["ResourceType"] = "machine"
    problems = check_request("ec2", "RunInstances", req)
    assert [p.split(":")[0] for p in problems] == [
        "RunInstances.InstanceType", "RunInstances.BlockDeviceMappings[0].Ebs.VolumeType",
        "RunInstances.TagSpecifications[0].ResourceType"]


def test_close_enum_values_are_suggested():
    [problem] = check_request("ec2", "RunInstances", with_change("InstanceType", "g5.xlarg"))
    assert "closest: g5.xlarge" in problem


def test_maximum_and_minimum_from_the_model():
    # PutParameter.Name: min 1, max 2048 in botocore's ssm model; ParamValidator checks only the min.
    assert check_request("ssm", "PutParameter", {"Name": "/a", "Value": "v", "Type": "String"}) == []
    [too_long] = check_request("ssm", "PutParameter", {"Name": "/" + "a" * 2048, "Value": "v"})
    assert too_long == "PutParameter.Name: length 2049 is over the maximum 2048"
    [too_short] = check_request("ssm", "PutParameter", {"Name": "", "Value": "v"})
    assert "Invalid length for parameter Name" in too_short
    [bad_type] = check_request("ssm", "PutParameter", {"Name": "/a", "Value": "v", "Type": "Text"})
    assert bad_type.startswith("PutParameter.Type: 'Text' is not one of ['String', 'StringList', 'SecureString']")


def test_blob_timestamp_map_types():
    # UserData is a string in the EC2 model; these shapes come from other operations.
    assert check_request("ec2", "DescribeSpotPriceHistory",
                         {"StartTime": "2024-01-01T00:00:00Z", "InstanceTypes": ["g5.xlarge"]}) == []
    [bad_time] = check_request("ec2", "DescribeSpotPriceHistory", {"StartTime": "yesterday-ish"})
    assert "Invalid type for parameter StartTime" in bad_time
    [bad_blob] = check_request("ec2", "ImportKeyPair", {"KeyName": "k", "PublicKeyMaterial": 42})
    assert "Invalid type for parameter PublicKeyMaterial" in bad_blob
    assert check_request("ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript",
                                                "Parameters": {"commands": ["nvidia-smi"]}}) == []
    [bad_map] = check_request("ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript",
                                                     "Parameters": ["nvidia-smi"]})
    assert "Invalid type for parameter Parameters" in bad_map
