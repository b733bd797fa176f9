"""The template's events section (SPEC "Events"): the notification or EventBridge rule,
the events queue with its dead-letter queue, the event source mapping reporting batch
item failures, the permissions, and the scan on its reconciliation schedule. The whole
template also passes cfn-lint (tests/test_deploy.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from .test_deploy import TEMPLATE, _IntrinsicLoader, _resolve

PARAMS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "scanner",
    "Mode": "single",
    "SourceBucket": "bkt-src",
    "Prefix": "incoming/",
    "StateBucket": "",
    "StatePrefix": "state/processed_files/",
    "QueueArn": "arn:aws:sqs:us-east-1:123456789012:files",
    "DoctorPermissions": "false",
    "FanoutReservedConcurrency": "0",
    "AlarmEmail": "",
    "ScheduleExpression": "rate(15 minutes)",
    "ReconciliationSchedule": "rate(1 day)",
    "EventsBatchSize": "100",
    "EventsBatchingWindowSeconds": "5",
    "EventsMaxConcurrency": "3",
    "EventsMaxReceiveCount": "4",
    "EventsVisibilityTimeout": "5400",
}


class Stack:
    """The template's resources with the conditions of ``params`` applied."""

    def __init__(self, **params: str) -> None:
        self.params = {**PARAMS, **params}
        doc = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_IntrinsicLoader)
        self.conditions: dict[str, bool] = {}
        for name, spec in doc["Conditions"].items():  # in order: later ones use earlier
            self.conditions[name] = bool(self._resolve(spec))
        self.resources = {
            name: res
            for name, res in doc["Resources"].items()
            if "Condition" not in res or self.conditions[res["Condition"]]
        }

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::Not"}:
            return not self._resolve(value["Fn::Not"][0])
        if isinstance(value, dict) and set(value) == {"Condition"}:
            return self.conditions[value["Condition"]]
        return _resolve(value, self.params, self.conditions)

    def props(self, name: str) -> dict[str, Any]:
        props: dict[str, Any] = self.resources[name]["Properties"]
        return props


def _resolved(stack: Stack, value: Any) -> Any:
    """Resolve what the test resolver knows; GetAtt and Ref of resources stay as given."""
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        return value
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in stack.resources:
        return value
    if isinstance(value, dict):
        if set(value) & {"Fn::If", "Fn::Sub", "Fn::Equals", "Ref"}:
            return stack._resolve(value)
        return {k: _resolved(stack, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(stack, v) for v in value]
    return value


def test_without_events_nothing_is_added() -> None:
    stack = Stack(Events="none")
    assert not [name for name in stack.resources if name.startswith("Events")]
    assert stack._resolve(stack.props("Schedule")["ScheduleExpression"]) == "rate(15 minutes)"
    reserved = stack._resolve(stack.props("ScannerFunction")["ReservedConcurrentExecutions"])
    assert reserved == 1


@pytest.mark.parametrize("source", ["eventbridge", "notification"])
def test_events_queue_mapping_and_reconciliation(source: str) -> None:
    stack = Stack(Events=source)
    queue = stack.props("EventsQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": "EventsDeadLetterQueue.Arn"
    }
    assert stack._resolve(queue["RedrivePolicy"]["maxReceiveCount"]) == "4"
    assert stack._resolve(queue["VisibilityTimeout"]) == "5400"
    mapping = stack.props("EventsMapping")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": "EventsQueue.Arn"}
    assert mapping["FunctionName"] == {"Ref": "ScannerFunction"}
    assert stack._resolve(mapping["BatchSize"]) == "100"
    assert stack._resolve(mapping["MaximumBatchingWindowInSeconds"]) == "5"
    assert stack._resolve(mapping["ScalingConfig"]["MaximumConcurrency"]) == "3"
    assert stack.resources["EventsMapping"]["DependsOn"] == "EventsPolicy"
    # The scan becomes the reconciliation, and runs beside the event batches.
    assert stack._resolve(stack.props("Schedule")["ScheduleExpression"]) == "rate(1 day)"
    function = stack.props("ScannerFunction")
    assert stack._resolve(function["ReservedConcurrentExecutions"]) is _no_value()


def _no_value() -> object:
    from .test_deploy import _NO_VALUE

    return _NO_VALUE


def test_the_eventbridge_rule_feeds_the_queue_for_the_bucket_and_prefix() -> None:
    stack = Stack(Events="eventbridge")
    rule = stack.props("EventsRule")
    pattern = _resolved(stack, rule["EventPattern"])
    assert pattern == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["bkt-src"]}, "object": {"key": [{"prefix": "incoming/"}]}},
    }
    assert rule["Targets"] == [{"Id": "events-queue", "Arn": {"Fn::GetAtt": "EventsQueue.Arn"}}]
    (statement,) = _resolved(stack, stack.props("EventsQueuePolicy")["PolicyDocument"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": "EventsRule.Arn"}
    whole = Stack(Events="eventbridge", Prefix="")
    detail = _resolved(whole, whole.props("EventsRule")["EventPattern"])["detail"]
    assert "object" not in detail or detail["object"] is _no_value()


def test_the_bucket_notification_may_send_to_the_queue() -> None:
    stack = Stack(Events="notification")
    assert "EventsRule" not in stack.resources
    (statement,) = _resolved(stack, stack.props("EventsQueuePolicy")["PolicyDocument"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::bkt-src"
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_the_function_may_read_the_notified_objects_and_the_queue() -> None:
    stack = Stack(Events="eventbridge")
    policy = stack.props("EventsPolicy")
    assert policy["Roles"] == [{"Ref": "ScannerRole"}]
    statements = _resolved(stack, policy["PolicyDocument"])["Statement"]
    grants = {
        (action, json.dumps(s["Resource"]))
        for s in statements
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    queue = json.dumps({"Fn::GetAtt": "EventsQueue.Arn"})
    assert grants == {
        ("s3:GetObject", json.dumps("arn:aws:s3:::bkt-src/incoming/*")),
        ("sqs:ReceiveMessage", queue),
        ("sqs:DeleteMessage", queue),
        ("sqs:GetQueueAttributes", queue),
    }
