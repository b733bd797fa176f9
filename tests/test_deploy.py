"""The deployable template and its state machine pass ``cfn-lint`` offline.

``cfn-lint deploy/template.yaml`` checks the template (SAM resources included) but not
a definition kept in its own file (``DefinitionUri``), so the definition is also linted
wrapped in an ``AWS::StepFunctions::StateMachine`` whose ``Definition`` is the file:
that is where cfn-lint applies the Amazon States Language schema (rule E3601).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from cfnlint.api import lint  # type: ignore[import-untyped]

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
