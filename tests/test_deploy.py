"""The deployable template and its state machine pass ``cfn-lint`` offline.

``cfn-lint deploy/template.yaml`` checks the template (SAM resources included) but not
a definition kept in its own file (``DefinitionUri``), so the definition is also linted
wrapped in an ``AWS::StepFunctions::StateMachine`` whose ``Definition`` is the file:
that is where cfn-lint applies the Amazon States Language schema (rule E3601).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import lint  # type: ignore[import-untyped]

from async_discovery.config import Config
from async_discovery.iam import build_policy

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "template.yaml"
DEFINITION = ROOT / "deploy" / "statemachine" / "fanout.asl.json"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (``!Ref``, ``!Sub``, ...) as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tag)


def _wrapped(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Fanout": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {
                        "RoleArn": "arn:aws:iam::123456789012:role/fanout",
                        "Definition": definition,
                        "DefinitionSubstitutions": {
                            "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                            "MaxConcurrency": "40",
                            "BatchSize": "20",
                        },
                    },
                }
            },
        }
    )


def _messages(template: str) -> list[str]:
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in lint(template)]


def test_template_passes_cfn_lint() -> None:
    assert _messages(TEMPLATE.read_text(encoding="utf-8")) == []


def test_state_machine_definition_passes_cfn_lint() -> None:
    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    assert _messages(_wrapped(definition)) == []


def test_cfn_lint_rejects_a_broken_definition() -> None:
    """The definition check can fail: a state with both Next and End is reported."""
    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    definition["States"]["Sum"]["Next"] = "Plan"
    assert any(m.startswith("E3601") for m in _messages(_wrapped(definition)))


def test_definition_substitutions_are_the_templates() -> None:
    """Every ``${Name}`` in the definition is substituted by the template, and the
    definition is valid JSON before substitution (numbers arrive as strings)."""
    text = DEFINITION.read_text(encoding="utf-8")
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
    machine = template["Resources"]["FanoutStateMachine"]["Properties"]
    names = set(machine["DefinitionSubstitutions"])
    used = {part.split("}")[0] for part in text.split("${")[1:]}
    assert used == names
    json.loads(text)


# -- the template's scanner role grants what `iam-policy` prints for the layout ----------


class _IntrinsicLoader(yaml.SafeLoader):
    """Reads the short-form tags as their long form (``!Sub x`` -> ``{"Fn::Sub": x}``)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value = _tag(loader, suffix, node)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_IntrinsicLoader.add_multi_constructor("!", _intrinsic)

_NO_VALUE = object()


def _resolve(value: Any, params: dict[str, str], conditions: dict[str, bool]) -> Any:
    """Evaluate Ref, Sub, If and Equals over ``params`` (enough for the role's policy)."""
    if isinstance(value, list):
        items = [_resolve(v, params, conditions) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return _NO_VALUE if value["Ref"] == "AWS::NoValue" else params[value["Ref"]]
    if set(value) == {"Fn::If"}:
        name, then, otherwise = value["Fn::If"]
        return _resolve(then if conditions[name] else otherwise, params, conditions)
    if set(value) == {"Fn::Equals"}:
        left, right = (_resolve(v, params, conditions) for v in value["Fn::Equals"])
        return left == right
    if set(value) == {"Fn::Sub"}:
        spec = value["Fn::Sub"]
        text, local = (spec, {}) if isinstance(spec, str) else spec
        names = {**params, **{k: _resolve(v, params, conditions) for k, v in local.items()}}
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(names[m.group(1)]), text)
    return {k: _resolve(v, params, conditions) for k, v in value.items()}


def _grants(document: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    """Each statement as (action, resource, s3:prefix pattern) triples."""
    found: set[tuple[str, str, str | None]] = set()
    for statement in document["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        condition = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        for action in [actions] if isinstance(actions, str) else actions:
            for resource in [resources] if isinstance(resources, str) else resources:
                for prefix in [condition] if isinstance(condition, str | None) else condition:
                    found.add((action, resource, prefix))
    return found


@pytest.mark.parametrize("state_bucket", ["", "bkt-state"])
def test_template_role_grants_what_iam_policy_prints(state_bucket: str) -> None:
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_IntrinsicLoader)
    params = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "scanner",
        "Mode": "fanout",
        "SourceBucket": "bkt-src",
        "Prefix": "incoming/",
        "StateBucket": state_bucket,
        "StatePrefix": "state/processed_files/",
        "QueueArn": "arn:aws:sqs:us-east-1:123456789012:files",
        "DoctorPermissions": "false",
        "Events": "none",
    }
    conditions = {
        name: bool(_resolve(spec, params, {})) for name, spec in template["Conditions"].items()
    }
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    (scanner,) = [
        p
        for r in roles
        for p in r["Properties"].get("Policies", [])
        if p["PolicyName"] == "scanner"
    ]
    document = _resolve(scanner["PolicyDocument"], params, conditions)
    config = Config(
        source_bucket="bkt-src",
        prefix="incoming/",
        queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/files",
        state_bucket=state_bucket or "bkt-src",
        state_key="state/processed_files/",
        state_layout="folders",
    )
    printed = build_policy(config).document
    assert _grants(document) == _grants(printed)
