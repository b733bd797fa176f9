"""The event path's test set-up: a bucket whose S3 Event Notifications moto delivers to
an events queue (as S3 would), a target queue, and Lambda-shaped SQS records of what
arrived."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from async_discovery.handler import lambda_handler

from .helpers import SCANNER_VARIABLES, MotoEnv

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import QueueConfigurationTypeDef


class FakeContext:
    """The Lambda context: only the remaining time matters."""

    def __init__(self, remaining_ms: float = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_ms)


@dataclasses.dataclass
class Notified:
    """A bucket that notifies ``events_url`` of every object created in it."""

    env: MotoEnv
    bucket: str
    events_url: str
    events_arn: str
    target_url: str

    def put(self, key: str, body: bytes | str = b"a,b\n1,2\n") -> str:
        return self.env.put(self.bucket, key, body)

    def records(self, *, drop_test_event: bool = True) -> list[dict[str, Any]]:
        """Every notification waiting on the events queue, as the event source mapping
        hands them to the function (and removed from the queue)."""
        out = []
        for message in self.env.receive_all(self.events_url):
            self.env.sqs.delete_message(
                QueueUrl=self.events_url, ReceiptHandle=message["ReceiptHandle"]
            )
            record = sqs_record(message["MessageId"], message["Body"], self.events_arn)
            if drop_test_event and '"s3:TestEvent"' in message["Body"]:
                continue
            out.append(record)
        return out

    def sent(self) -> list[dict[str, Any]]:
        """The bodies that reached the target queue (drained)."""
        return self.env.bodies(self.target_url)


def sqs_record(
    message_id: str, body: str, arn: str = "arn:aws:sqs:us-east-1:1:q"
) -> dict[str, Any]:
    """One record of a Lambda SQS event."""
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


def queue_arn(env: MotoEnv, url: str) -> str:
    attrs = env.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def notified_bucket(
    env: MotoEnv,
    *,
    fifo_target: bool = False,
    bucket: str | None = None,
    prefix: str | None = "incoming/",
) -> Notified:
    """A bucket (fresh unless given) with an ``s3:ObjectCreated:*`` queue notification
    for the keys under ``prefix`` (None: every key, the state object's writes too; moto
    sends the ``s3:TestEvent`` right away, as S3 does) and a fresh target queue."""
    bucket = bucket or env.new_bucket()
    events_url = env.new_queue()
    arn = queue_arn(env, events_url)
    rule: QueueConfigurationTypeDef = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    if prefix is not None:
        rule["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    env.s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [rule]}
    )
    return Notified(env, bucket, events_url, arn, env.new_queue(fifo=fifo_target))


def configure(
    monkeypatch: pytest.MonkeyPatch,
    setup: Notified,
    layout: str = "single",
    *,
    endpoint: str | None = None,
    **variables: str,
) -> None:
    """The function's environment: scan the prefix ``incoming`` of the bucket into the
    target queue, against moto (or the proxy in front of it)."""
    for name in SCANNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("S3_SOURCE_BUCKET", setup.bucket)
    monkeypatch.setenv("S3_PREFIX", "incoming")
    monkeypatch.setenv("SQS_QUEUE_URL", setup.target_url)
    monkeypatch.setenv("STATE_LAYOUT", layout)
    monkeypatch.setenv("MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint or setup.env.endpoint)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def invoke(records: list[dict[str, Any]], context: FakeContext | None = None) -> list[str]:
    """The function on an SQS event: the ``itemIdentifier`` of each failed record."""
    response = lambda_handler({"Records": records}, context or FakeContext())
    assert set(response) == {"batchItemFailures"}
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def s3_body(bucket: str, key: str, etag: str = "0" * 32, name: str = "ObjectCreated:Put") -> str:
    """An S3 event notification body as AWS writes it (the key URL-encoded by hand:
    callers pass it encoded)."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": "2026-01-01T00:00:00.000Z",
                    "eventName": name,
                    "s3": {
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {"key": key, "size": 1, "eTag": etag, "sequencer": "0A"},
                    },
                }
            ]
        }
    )


def boto(env: MotoEnv, service: str) -> Any:
    """Another boto3 client against the moto server (SNS, EventBridge)."""
    make: Any = boto3.client  # SNS and EventBridge stubs are not installed
    return make(service, endpoint_url=env.endpoint, region_name="us-east-1")
