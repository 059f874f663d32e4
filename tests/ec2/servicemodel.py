"""Check a request dict against botocore's own model of the service, beyond what boto3 checks when it sends one.

boto3's ParamValidator catches unknown keys, missing required members, wrong types and too-short values, but not
enum values or maxima, and moto accepts nearly anything: an InstanceType of "g9.huge" or HttpTokens of "maybe"
would pass every local test and fail on AWS. check_request adds those checks, with botocore's data as the truth.
"""
from __future__ import annotations

import difflib
import functools
import re

import botocore.session
from botocore.validate import ParamValidator


@functools.lru_cache(maxsize=None)
def _service_model(service: str):
    return botocore.session.get_session().get_service_model(service)


def input_shape(service: str, operation: str):
    return _service_model(service).operation_model(operation).input_shape


def check_request(service: str, operation: str, params: dict) -> list[str]:
    """Every problem with `params` as the input of `service`.`operation` (e.g. "ec2", "RunInstances"), one
    human-readable line each, prefixed by the operation and the member path; [] if botocore's model accepts it."""
    shape = input_shape(service, operation)
    if shape is None:
        return [] if not params else [f"{operation}: takes no parameters, got {sorted(params)}"]
    report = ParamValidator().validate(params, shape)
    problems = [f"{operation}: {line}" for line in report.generate_report().splitlines() if line]
    _check_constraints(params, shape, operation, problems)
    return problems


def _check_constraints(value, shape, path: str, problems: list[str]) -> None:
    """What ParamValidator leaves out: enums, maxima, patterns, and bools where numbers belong (bool is an int
    subclass, so isinstance lets True through as MinCount). Goes only where the type is right, since
    ParamValidator has already reported the rest."""
    t = shape.type_name
    if t == "structure" and isinstance(value, dict):
        for key, member in value.items():
            if key in shape.members:
                _check_constraints(member, shape.members[key], f"{path}.{key}", problems)
    elif t == "list" and isinstance(value, (list, tuple)):
        _check_max(len(value), shape, path, "length", problems)
        for i, item in enumerate(value):
            _check_constraints(item, shape.member, f"{path}[{i}]", problems)
    elif t == "map" and isinstance(value, dict):
        for key, item in value.items():
            _check_constraints(key, shape.key, f"{path} (key {key!r})", problems)
            _check_constraints(item, shape.value, f"{path}.{key}", problems)
    elif t == "string" and isinstance(value, str):
        enum = shape.enum
        if enum and value not in enum:
            near = difflib.get_close_matches(value, enum, n=3)
            hint = f" (closest: {', '.join(near)})" if near else ""
            problems.append(f"{path}: {value!r} is not one of {_listing(enum)}{hint}")
        _check_max(len(value), shape, path, "length", problems)
        pattern = shape.metadata.get("pattern")
        if pattern:
            try:
                ok = re.search(pattern, value) is not None
            except re.error:  # a Java-only construct in the model's regex; can't judge it here
                ok = True
            if not ok:
                problems.append(f"{path}: {value!r} does not match the pattern {pattern!r}")
    elif t in ("integer", "long", "double", "float"):
        if isinstance(value, bool):
            problems.append(f"{path}: {value!r} is a bool where botocore expects {t}")
        elif isinstance(value, (int, float)):
            _check_max(value, shape, path, "value", problems)


def _check_max(n, shape, path: str, what: str, problems: list[str]) -> None:
    most = shape.metadata.get("max")
    if most is not None and n > most:
        problems.append(f"{path}: {what} {n} is over the maximum {most}")


def _listing(enum: list[str], show: int = 12) -> str:
    # InstanceType's enum has over a thousand entries; a sample says what shape a valid value has.
    shown = ", ".join(repr(v) for v in enum[:show])
    return f"[{shown}, ... ({len(enum)} values)]" if len(enum) > show else f"[{shown}]"
