"""moto's server app behind a middleware that fails RunInstances the way AWS does when capacity or quota runs out.

moto never runs out of capacity, and the launcher's EC2 backend has to handle exactly that (fall through to the
next AZ or instance type, give up cleanly on a quota), so this puts the failure back in front of the real moto app.

    python tests/ec2/ice_server.py --port P --rules RULES.json [--calls CALLS.jsonl]

RULES.json is read on every RunInstances request, so a test rewrites it between calls and one server process
serves a whole test module; a missing or empty file means "pass everything through":

    {"rules": [{"code": "VcpuLimitExceeded"},
               {"code": "InsufficientInstanceCapacity", "azs": ["us-east-1a"], "instance_types": ["g5.xlarge"],
                "market": "spot", "times": 1, "id": "..."}]}

The first rule whose matchers all hold answers the request; a matcher left out matches anything. "azs" matches
Placement.AvailabilityZone or, failing that, the AZ of the request's subnet. "market" is "spot" or "on-demand".
"times" (with an "id") caps how often a rule fires, counted in this process, for "capacity comes back later".
"status" and "message" override the AWS-like defaults below. A rule with "delay" (seconds) and no "code" holds
the request that long, then lets moto answer it: a RunInstances in flight, for killing the client mid-call.

Every RunInstances request is appended to CALLS.jsonl (what was asked, its whole form as sent, and which error it
got, if any), so a test can assert which AZs / instance types a launcher tried, in order, including botocore's own
retries, and what exactly each request said.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

# AWS's HTTP status per code: capacity errors are 5xx (so botocore's retry handler retries them, as it does
# against AWS), quota errors are 4xx.
STATUS = {"InsufficientInstanceCapacity": 500, "InsufficientHostCapacity": 500, "InsufficientCapacity": 500,
          "VcpuLimitExceeded": 400, "InstanceLimitExceeded": 400, "MaxSpotInstanceCountExceeded": 400,
          "SpotMaxPriceTooLow": 400, "Unsupported": 400}


def default_message(code: str, req: dict) -> str:
    itype, az = req.get("instance_type") or "m1.small", req.get("az")
    if code == "InsufficientInstanceCapacity":
        if az:
            return (f"We currently do not have sufficient {itype} capacity in the Availability Zone you requested "
                    f"({az}). Our system will be working on provisioning additional capacity. You can currently get "
                    f"{itype} capacity by not specifying an Availability Zone in your request or choosing a "
                    f"different Availability Zone.")
        return f"Insufficient capacity for {itype}."
    if code == "VcpuLimitExceeded":
        return ("You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance "
                "bucket that the specified instance type belongs to. Please visit "
                "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.")
    if code == "MaxSpotInstanceCountExceeded":
        return "Max spot instance count exceeded"
    return f"{code} (injected by tests/ec2/ice_server.py)"


def error_response(code: str, message: str, status: int, start_response):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"</Errors><RequestID>{uuid.uuid4()}</RequestID></Response>").encode()
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "text/xml;charset=UTF-8"),
                                          ("Content-Length", str(len(body)))])
    return [body]


def region_of(environ) -> str:
    # SigV4: "... Credential=AKID/20240101/us-east-1/ec2/aws4_request, ..."
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split("/")[2]
    except IndexError:
        return "us-east-1"


def subnet_az(subnet_id: str, region: str) -> str | None:
    # Same process as moto, so ask its backend directly rather than making a DescribeSubnets round trip.
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    try:
        return ec2_backends[DEFAULT_ACCOUNT_ID][region].get_subnet(subnet_id).availability_zone
    except Exception:  # an unknown subnet is moto's error to report, not ours
        return None


def describe_request(form: dict[str, str], region: str) -> dict:
    subnet = form.get("SubnetId") or form.get("NetworkInterface.1.SubnetId")
    az = form.get("Placement.AvailabilityZone") or (subnet_az(subnet, region) if subnet else None)
    market = "spot" if form.get("InstanceMarketOptions.MarketType") == "spot" else "on-demand"
    return {"region": region, "az": az, "subnet": subnet, "instance_type": form.get("InstanceType"),
            "image_id": form.get("ImageId"), "market": market, "min_count": form.get("MinCount"),
            "max_count": form.get("MaxCount"), "client_token": form.get("ClientToken"),
            "launch_template": form.get("LaunchTemplate.LaunchTemplateId") or form.get(
                "LaunchTemplate.LaunchTemplateName")}


def matches(rule: dict, req: dict) -> bool:
    if rule.get("azs") is not None and req["az"] not in rule["azs"]:
        return False
    if rule.get("instance_types") is not None and req["instance_type"] not in rule["instance_types"]:
        return False
    if rule.get("market") is not None and req["market"] != rule["market"]:
        return False
    return True


class CapacityMiddleware:
    def __init__(self, app, rules_path: Path, calls_path: Path | None):
        self.app, self.rules_path, self.calls_path = app, Path(rules_path), calls_path and Path(calls_path)
        self.lock = threading.Lock()  # run_simple is threaded: guards the hit counts and the calls log
        self.hits: dict[str, int] = {}

    def rules(self) -> list[dict]:
        try:
            return json.loads(self.rules_path.read_text() or "{}").get("rules", [])
        except FileNotFoundError:
            return []

    def __call__(self, environ, start_response):
        # Only the query protocol (form-encoded, as boto3 sends EC2 calls) can be RunInstances; anything else, S3
        # uploads included, goes to moto with its body stream untouched.
        is_form = "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", "")
        if not is_form and "Action=RunInstances" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        body = self._take_body(environ) if is_form else b""
        form = self._form(environ, body)
        if form.get("Action") != "RunInstances":
            return self.app(environ, start_response)
        req = describe_request(form, region_of(environ))
        with self.lock:
            rule = self._pick(req)
            self._log({**req, "error": rule and rule.get("code"), "form": form})
        if rule is not None and rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if rule is None or not rule.get("code"):
            return self.app(environ, start_response)
        return error_response(rule["code"], rule.get("message") or default_message(rule["code"], req),
                              int(rule.get("status") or STATUS.get(rule["code"], 400)), start_response)

    def _pick(self, req: dict) -> dict | None:
        for i, rule in enumerate(self.rules()):
            if not matches(rule, req):
                continue
            if rule.get("times") is not None:
                key = str(rule.get("id", i))
                if self.hits.get(key, 0) >= int(rule["times"]):
                    continue
                self.hits[key] = self.hits.get(key, 0) + 1
            return rule
        return None

    def _log(self, record: dict) -> None:
        if self.calls_path:
            with open(self.calls_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    @staticmethod
    def _take_body(environ) -> bytes:
        # Reading wsgi.input consumes it, so put an identical stream back for moto.
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return body

    @staticmethod
    def _form(environ, body: bytes) -> dict[str, str]:
        if environ.get("HTTP_CONTENT_ENCODING") == "gzip":
            body = gzip.decompress(body)
        form = parse_qs(environ.get("QUERY_STRING", ""))
        form.update(parse_qs(body.decode("utf-8", "replace")))
        return {k: v[0] for k, v in form.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--calls", type=Path)
    args = p.parse_args(argv)
    # moto builds some URLs from it (python -m moto.server sets it the same way).
    os.environ.setdefault("MOTO_PORT", str(args.port))

    # Imported here, after argv is known good, because importing moto is slow (and reads its MOTO_* settings).
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    # Exit through sys.exit on SIGTERM, as `python -m moto.server` does, so buffered logs get flushed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = CapacityMiddleware(DomainDispatcherApplication(create_backend_app), args.rules, args.calls)
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
