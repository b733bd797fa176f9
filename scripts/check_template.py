#!/usr/bin/env python3
"""Check offline that ``sam deploy`` would accept deploy/template.yaml.

    python scripts/check_template.py [TEMPLATE]      # exit 0: accepted; 1: the problems

``cfn-lint`` alone does not run the SAM transform, so a template it passes can still be
refused by CloudFormation, or never get its code uploaded. This script does what
``sam deploy`` does, without AWS:

1. ``cfn-lint`` on the template as written;
2. ``sam package``: every ``CodeUri`` and ``DefinitionUri`` must be a literal local
   path (``sam package`` uploads only those: it leaves a ``!Ref`` or any other object
   as it is); each is replaced by the S3 location the upload would give (the zip need
   not exist yet; a definition file must, it is read in step 4);
3. the SAM transform (aws-sam-translator, the library CloudFormation's
   ``AWS::Serverless-2016-10-31`` transform runs), with the managed-policy lookup
   stubbed: it would otherwise list IAM's policies over the network;
4. ``cfn-lint`` on the transformed template, with each state machine's definition file
   inlined (so the Amazon States Language rules apply to it too).

Prints one line per problem on stderr, or ``ok`` and the resources the transform made.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from boto3.session import Session
from cfnlint.api import lint  # type: ignore[import-untyped]
from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml  # type: ignore[import-untyped]
from samtranslator.model.exceptions import (  # type: ignore[import-untyped]
    InvalidDocumentException,
)
from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
from samtranslator.translator.translator import Translator  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "template.yaml"
PACKAGE_BUCKET = "sam-package-bucket"
# What CloudFormation passes the transform for a stack (pseudo parameters).
PSEUDO_PARAMETERS = {
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "async-discovery",
    "AWS::URLSuffix": "amazonaws.com",
}
# (resource type, property) of what `sam package` uploads, and whether it replaces the
# path with an s3:// URI (True) or with {"Bucket", "Key"} (False).
PACKAGED = {
    ("AWS::Serverless::Function", "CodeUri"): True,
    ("AWS::Serverless::StateMachine", "DefinitionUri"): False,
}


def offline_policies() -> dict[str, str]:
    """The managed-policy lookup, stubbed (the real one lists IAM's policies over the
    network): no AWS managed policy is known by name, so a template that names one in a
    SAM ``Policies`` list fails here, visibly."""
    return {}


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """The SAM transform of ``template``, as CloudFormation runs it, offline: the region
    is given (a boto3 session makes no request), the policy lookup stubbed."""
    translator = Translator(None, Parser(), boto_session=Session(region_name="us-east-1"))
    output: dict[str, Any] = translator.translate(
        template, dict(PSEUDO_PARAMETERS), get_managed_policy_map=offline_policies
    )
    return output


def lint_messages(template: dict[str, Any] | str) -> list[str]:
    """cfn-lint's findings on a template (text, or an already parsed one)."""
    text = template if isinstance(template, str) else json.dumps(template)
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in lint(text)]


def package(template: dict[str, Any], base: Path, problems: list[str]) -> dict[Path, Any]:
    """Replace every packaged local path by the S3 location ``sam package`` would give it
    (in place); return what each state machine definition file holds (parsed)."""
    definitions: dict[Path, Any] = {}
    for name, resource in template.get("Resources", {}).items():
        properties = resource.get("Properties") or {}
        for (kind, prop), as_uri in PACKAGED.items():
            if resource.get("Type") != kind or prop not in properties:
                continue
            value = properties[prop]
            if not isinstance(value, str):
                problems.append(
                    f"{name}.{prop} is {json.dumps(value)}: sam package uploads only a "
                    "literal local path and leaves anything else as it is"
                )
                continue
            if value.startswith("s3://"):
                continue
            key = f"{name}/{Path(value).name}"
            properties[prop] = (
                f"s3://{PACKAGE_BUCKET}/{key}" if as_uri else {"Bucket": PACKAGE_BUCKET, "Key": key}
            )
            if prop == "DefinitionUri":
                path = (base / value).resolve()
                try:
                    definitions[path] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    problems.append(f"{name}.{prop} = {value}: {exc}")
    return definitions


def inline_definitions(output: dict[str, Any], definitions: dict[Path, Any]) -> None:
    """Put each packaged definition back as ``Definition`` so cfn-lint checks its ASL."""
    by_key = {f"{p.name}": d for p, d in definitions.items()}
    for resource in output.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        location = properties.get("DefinitionS3Location")
        if resource.get("Type") == "AWS::StepFunctions::StateMachine" and location:
            definition = by_key.get(str(location.get("Key", "")).rsplit("/", 1)[-1])
            if definition is not None:
                del properties["DefinitionS3Location"]
                properties["Definition"] = definition


def check(path: Path = TEMPLATE) -> tuple[list[str], dict[str, Any] | None]:
    """Every problem ``sam deploy`` would meet offline, and the transformed template."""
    text = path.read_text(encoding="utf-8")
    problems = [f"template: {m}" for m in lint_messages(text)]
    template: dict[str, Any] = json.loads(json.dumps(load_cfn_yaml(text)))
    definitions = package(template, path.parent, problems)
    try:
        output = sam_transform(template)
    except InvalidDocumentException as exc:
        problems.extend(f"SAM transform: {cause.message}" for cause in exc.causes)
        return problems, None
    inline_definitions(output, definitions)
    problems.extend(f"transformed: {m}" for m in lint_messages(output))
    return problems, output


def main(argv: list[str] | None = None) -> int:
    """Check the template; exit 0 when ``sam deploy`` would accept it, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("template", nargs="?", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    problems, output = check(args.template)
    for problem in problems:
        sys.stderr.write(f"{args.template}: {problem}\n")
    if problems or output is None:
        return 1
    kinds = sorted({r["Type"] for r in output["Resources"].values()})
    sys.stdout.write(f"ok: {len(output['Resources'])} resources after the SAM transform\n")
    sys.stdout.write("".join(f"  {kind}\n" for kind in kinds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
