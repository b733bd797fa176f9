"""The deployable template: ``sam deploy`` would accept it (scripts/check_template.py:
cfn-lint, the packaging of local paths, the SAM transform offline, cfn-lint of the
transformed template), its state machine passes the Amazon States Language rules, and
its roles and outputs agree with what the CLI prints.

The definition is also linted on its own, wrapped in an
``AWS::StepFunctions::StateMachine`` whose ``Definition`` is the file: that is where
cfn-lint applies the Amazon States Language schema (rule E3601).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cfnlint.api import lint  # type: ignore[import-untyped]

from async_discovery.cli import main
from async_discovery.config import Config
from async_discovery.fanout import RESULTS_NAME
from async_discovery.iam import build_policy
from async_discovery.layout import runs_key

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
                            "ToleratedFailurePercentage": "0",
                            "StateBucket": "bkt-state",
                            "ResultsPrefix": "state/processed_files/runs/incoming/results",
                        },
                    },
                }
            },
        }
    )


def _messages(template: str) -> list[str]:
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in lint(template)]


def _check_template() -> ModuleType:
    """scripts/check_template.py, imported (scripts/ is not a package)."""
    path = ROOT / "scripts" / "check_template.py"
    spec = importlib.util.spec_from_file_location("check_template", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sam_deploy_would_accept_the_template() -> None:
    """cfn-lint, the packaging, the SAM transform and cfn-lint of its output (with the
    definition inlined) find nothing; the transform makes what the template promises."""
    problems, output = _check_template().check(TEMPLATE)
    assert problems == []
    assert output is not None
    resources = output["Resources"]
    kinds = {r["Type"] for r in resources.values()}
    assert {
        "AWS::Lambda::Function",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::StepFunctions::StateMachine",
        "AWS::CloudWatch::Alarm",
        "AWS::Logs::LogGroup",
        "AWS::SQS::Queue",
    } <= kinds
    (function,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["Properties"]["Code"]["S3Key"].endswith("async-discovery-lambda.zip")
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    # The packaged definition went back in, so the ASL rules were applied to it.
    assert machine["Properties"]["Definition"]["StartAt"] == "Options"


def test_template_check_refuses_a_code_uri_sam_package_skips() -> None:
    """``CodeUri: !Ref CodeUri`` is left as it is by ``sam package``: the check says so
    (and the transform then needs a Bucket and Key)."""
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_IntrinsicLoader)
    template["Resources"]["ScannerFunction"]["Properties"]["CodeUri"] = {"Ref": "CodeUri"}
    problems: list[str] = []
    _check_template().package(template, TEMPLATE.parent, problems)
    assert problems == [
        'ScannerFunction.CodeUri is {"Ref": "CodeUri"}: sam package uploads only a literal '
        "local path and leaves anything else as it is"
    ]


@pytest.mark.slow  # the whole check again (cfn-lint twice, the transform)
def test_template_check_lints_the_inlined_definition(tmp_path: Path) -> None:
    """The check can fail on the definition: a state with both Next and End, in a copy
    of the deploy folder, is reported from the transformed template."""
    (tmp_path / "statemachine").mkdir()
    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    definition["States"]["Sum"]["Next"] = "Plan"
    (tmp_path / "statemachine" / DEFINITION.name).write_text(json.dumps(definition))
    (tmp_path / TEMPLATE.name).write_text(TEMPLATE.read_text(encoding="utf-8"))
    problems, _ = _check_template().check(tmp_path / TEMPLATE.name)
    assert problems and all(p.startswith("transformed: E3601") for p in problems), problems


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


def test_results_prefix_is_where_the_sum_expects_results() -> None:
    """The Map's ResultWriter writes under ``<state prefix>runs/<P>results``, a run
    object of the prefix, inside the scanner role's grant."""
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_IntrinsicLoader)
    substitutions = template["Resources"]["FanoutStateMachine"]["Properties"][
        "DefinitionSubstitutions"
    ]
    params = {"StatePrefix": "state/processed_files/", "Prefix": "incoming/"}
    prefix = _resolve(substitutions["ResultsPrefix"], params, {})
    assert prefix == runs_key("state/processed_files/", "incoming/", RESULTS_NAME)


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
    if set(value) == {"Fn::Not"}:
        return not _resolve(value["Fn::Not"][0], params, conditions)
    if set(value) == {"Fn::Equals"}:
        left, right = (_resolve(v, params, conditions) for v in value["Fn::Equals"])
        return left == right
    if set(value) == {"Fn::Select"}:
        index, items = value["Fn::Select"]
        return _resolve(items, params, conditions)[int(index)]
    if set(value) == {"Fn::Split"}:
        separator, text = value["Fn::Split"]
        return str(_resolve(text, params, conditions)).split(separator)
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


def _params(state_bucket: str = "", doctor: str = "false") -> dict[str, str]:
    return {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "scanner",
        "AWS::URLSuffix": "amazonaws.com",
        "Mode": "fanout",
        "SourceBucket": "bkt-src",
        "Prefix": "incoming/",
        "StateBucket": state_bucket,
        "StatePrefix": "state/processed_files/",
        "QueueArn": "arn:aws:sqs:eu-west-1:123456789012:files",
        "DoctorPermissions": doctor,
        "FanoutReservedConcurrency": "42",
        "AlarmEmail": "",
        "Events": "none",
    }


def _scanner_policy(params: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template (long-form intrinsics) and its scanner policy, resolved."""
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_IntrinsicLoader)
    conditions: dict[str, bool] = {}
    for name, spec in template["Conditions"].items():  # in order: Not may use earlier ones
        conditions[name] = bool(_resolve(spec, params, conditions))
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    (scanner,) = [
        p
        for r in roles
        for p in r["Properties"].get("Policies", [])
        if p["PolicyName"] == "scanner"
    ]
    return template, _resolve(scanner["PolicyDocument"], {**params}, conditions)


@pytest.mark.parametrize("state_bucket", ["", "bkt-state"])
def test_template_role_grants_what_iam_policy_prints(state_bucket: str) -> None:
    _, document = _scanner_policy(_params(state_bucket))
    config = Config(
        source_bucket="bkt-src",
        prefix="incoming/",
        queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/files",
        state_bucket=state_bucket or "bkt-src",
        state_key="state/processed_files/",
        state_layout="folders",
    )
    printed = build_policy(config).document
    assert _grants(document) == _grants(printed)


@pytest.mark.parametrize(("state_bucket", "doctor"), [("", "false"), ("bkt-state", "true")])
def test_policy_check_output_prints_the_scanner_policy(
    state_bucket: str,
    doctor: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    clean_config_env: None,
) -> None:
    """The stack output ``ScannerPolicyCheck``, run as a shell would, prints exactly what
    the template's scanner role grants (queue URL, state bucket and --doctor included)."""
    params = _params(state_bucket, doctor)
    template, document = _scanner_policy(params)
    conditions = {"SameStateBucket": not state_bucket, "WithDoctor": doctor == "true"}
    command = _resolve(template["Outputs"]["ScannerPolicyCheck"]["Value"], params, conditions)
    words = shlex.split(command)
    assignments = [w for w in words if "=" in w and not w.startswith("-")]
    argv = words[len(assignments) :]
    assert argv[0] == "async-discovery"
    for assignment in assignments:
        name, value = assignment.split("=", 1)
        monkeypatch.setenv(name, value)
    assert main(argv[1:]) == 0
    printed = _grants(json.loads(capsys.readouterr().out))
    granted = _grants(document)
    # Every statement of the role is printed; a printed grant the role lacks is one its
    # wildcards cover (--doctor's probe object lies under the run objects' grant).
    assert granted <= printed
    for action, resource, prefix in printed - granted:
        assert any(
            (a, p) == (action, prefix) and fnmatch.fnmatchcase(resource, r) for a, r, p in granted
        ), (action, resource)
