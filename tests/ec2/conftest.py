"""Each test module under tests/ec2 that asks for it gets its own EC2 endpoint: moto in a process on 127.0.0.1, with
AMI / instance type / key pair validation on and capacity errors on demand (see ec2moto.py, ice_server.py).

moto state (instances, parameters) is shared by the tests of a module, as on a real account: tag or name what a
test creates, or call ec2_moto.reset(). Capacity rules and the RunInstances call log are per test.
"""
from __future__ import annotations

import os

import pytest

from .ec2moto import EC2Moto, seed_ami_parameter, start_ec2_moto, without_aws
from .nodesim import NodeSimulator


@pytest.fixture(scope="module")
def ec2_moto(tmp_path_factory) -> EC2Moto:
    server = start_ec2_moto(tmp_path_factory.mktemp("ec2moto"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _capacity_per_test(request):
    # Only for tests that use the server: asking for it here would start one for pure tests too.
    if "ec2_moto" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("ec2_moto")
    server.clear_rules()
    server.clear_calls()
    yield
    server.clear_rules()


@pytest.fixture
def ec2_env(launcher_env, ec2_moto, tmp_path) -> dict[str, str]:
    """A full environment for `launch` subprocesses (tests/conftest.py's launcher_env) whose only AWS is ec2_moto."""
    # A detached job with --max-restarts gets a watcher (launch watch): here it looks every second.
    return {**without_aws(launcher_env), **ec2_moto.aws_env(tmp_path), "LAUNCHER_WATCH_EVERY": "1"}


def simulated_nodes(ec2_moto: EC2Moto, tmp_path_factory):
    """For a module-scoped fixture (`yield from`): the account's AMI parameter, and the node simulator playing every
    instance a test starts (its user-data really runs here)."""
    seed_ami_parameter(ec2_moto.client("ec2"), ec2_moto.client("ssm"))
    scratch = tmp_path_factory.mktemp("hosts")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **ec2_moto.aws_env(scratch)}
    with NodeSimulator(ec2_moto.endpoint, ec2_moto.region, scratch, env) as sim:
        yield sim
