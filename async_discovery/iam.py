"""The least-privilege IAM policy for one configuration (``async-discovery iam-policy``).

Pure: builds a policy document from a :class:`~async_discovery.config.Config`; imports no
AWS library and calls no AWS API. What the scanner does, and so what it needs:

- ``ListObjectsV2`` on the source bucket, always with ``Prefix`` = the scanned prefix or
  a folder under it (the folder discovery uses ``Delimiter=/`` on the prefix itself):
  ``s3:ListBucket`` on the bucket, with ``s3:prefix`` restricted to ``<prefix>*``.
  With an empty prefix (whole bucket) the condition is left out: an empty ``Prefix``
  is not sent as a condition value IAM could match.
- It never reads the source objects (the listing carries ETag, size and date), so
  there is no ``s3:GetObject`` on them.
- ``GetObject`` and ``PutObject`` (conditional: ``If-Match``/``If-None-Match``, which
  need nothing more) on the state object's key only.
- On the first run the state object does not exist yet, and S3 answers a ``GetObject``
  of a missing key with **403 AccessDenied instead of 404** unless the caller may list
  the whole bucket. Reading any 403 as "no state" would resend every file after a real
  denial, so on a 403 the state store lists exactly the state key
  (``ListObjectsV2 Prefix=<key> MaxKeys=1``) and treats the object as missing only when
  that listing shows it absent. The policy therefore grants ``s3:ListBucket`` on the
  state bucket with ``s3:prefix`` = the state key (no unconditional ListBucket).
- ``SendMessageBatch`` is authorised by ``sqs:SendMessage`` on the queue ARN.
- With ``STATE_LAYOUT=folders`` the state is many objects of the prefix ``P``: the
  shards under ``<state prefix>folders/<P>`` and the run objects (cursor, first-run
  record, fan-out plan) under ``<state prefix>runs/<P>``. Both key prefixes get
  ``s3:GetObject``, ``s3:PutObject`` and ``s3:DeleteObject`` (a finished pass deletes
  its cursor, a complete run the shard of a vanished folder), and ``s3:ListBucket``
  with ``s3:prefix`` = each of them: the run lists the shards to tell a first run and
  to find vanished folders, and the 403-vs-404 rule lists the exact key read.

``async-discovery doctor`` needs two things more, which a scan never does
(``build_policy(..., doctor=True)``, ``iam-policy --doctor``): ``s3:PutObject`` and
``s3:DeleteObject`` on one probe object beside the state (:func:`doctor_probe_key`: the
state key + ``.doctor-probe``; under ``folders``, ``<state prefix>runs/<P>doctor-probe``),
where it tries conditional writes, and
``sqs:GetQueueAttributes`` on the queue. Without them the doctor skips those checks with
a warning. :func:`grant` words one grant of a policy the way the doctor reports a
denied call.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlsplit

from .config import Config
from .layout import runs_key, shards_prefix

POLICY_VERSION = "2012-10-17"
PROBE_SUFFIX = ".doctor-probe"
# Statement ids, so a caller can name one grant (see :func:`grant`).
SID_LIST_SOURCE = "ListSourcePrefix"
SID_STATE = "ReadWriteStateObject"
SID_LIST_STATE = "ListStateKey"
SID_SEND = "SendToQueue"
SID_PROBE = "DoctorProbeObject"
SID_QUEUE_ATTRIBUTES = "DoctorQueueAttributes"
_ACCOUNT_RE = re.compile(r"^\d{12}$")
# sqs.<region>.amazonaws.com[.cn], <region>.queue.amazonaws.com (legacy), VPC endpoints
# (vpce-….sqs.<region>.vpce.amazonaws.com) and the region-less queue.amazonaws.com.
_SQS_HOST_RES = (
    re.compile(r"^sqs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?$"),
    re.compile(r"^sqs-fips\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$"),
    re.compile(r"^(?P<region>[a-z0-9-]+)\.queue\.amazonaws\.com(?P<cn>\.cn)?$"),
    re.compile(
        r"^vpce-[a-z0-9-]+\.sqs\.(?P<region>[a-z0-9-]+)\.vpce\.amazonaws\.com(?P<cn>\.cn)?$"
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueArn:
    """The queue's ARN and how sure it is: ``exact`` is False when a part had to be a
    wildcard (a non-AWS URL such as a moto server's); ``notes`` say which and why."""

    arn: str
    partition: str
    region: str
    account: str
    name: str
    exact: bool
    notes: tuple[str, ...] = ()


def partition_of(region: str) -> str:
    """The AWS partition of a region (``aws``, ``aws-cn``, ``aws-us-gov``); ``aws`` for
    an unknown or wildcard region."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def queue_arn(queue_url: str, *, region: str | None = None) -> QueueArn:
    """The ARN of the queue at ``queue_url``.

    ``https://sqs.<region>.amazonaws.com/<account>/<name>`` becomes
    ``arn:aws:sqs:<region>:<account>:<name>`` (FIFO names keep their ``.fifo``). For a
    URL that is not an AWS endpoint (moto, LocalStack) the account and name still come
    from the path; the region is ``region`` when given, otherwise ``*``; a part that
    cannot be known becomes ``*`` and ``exact`` is False.
    """
    parts = urlsplit(queue_url.strip())
    host = (parts.hostname or "").lower()
    segments = [s for s in parts.path.split("/") if s]
    notes: list[str] = []
    url_region: str | None = None
    aws_host = False
    for pattern in _SQS_HOST_RES:
        match = pattern.match(host)
        if match:
            url_region, aws_host = match.group("region"), True
            break
    if host == "queue.amazonaws.com":
        url_region, aws_host = "us-east-1", True
    if url_region is not None:
        final_region = url_region
    elif region:
        final_region = region
        notes.append(f"{host or queue_url!r} is not an AWS SQS endpoint; region {region!r} used")
    else:
        final_region = "*"
        notes.append(
            f"{host or queue_url!r} is not an AWS SQS endpoint: region written as '*' "
            "(pass --region)"
        )
    account, name = "*", "*"
    if len(segments) >= 2:
        account, name = segments[-2], segments[-1]
    elif segments:
        name = segments[-1]
    if not _ACCOUNT_RE.match(account):
        notes.append(f"no 12-digit account id in the queue URL ({account!r}): written as '*'")
        account = "*"
    if not name or name == "*":
        notes.append("no queue name in the queue URL: written as '*'")
        name = "*"
    partition = partition_of(final_region)
    exact = aws_host and not notes
    return QueueArn(
        arn=f"arn:{partition}:sqs:{final_region}:{account}:{name}",
        partition=partition,
        region=final_region,
        account=account,
        name=name,
        exact=exact,
        notes=tuple(notes),
    )


def _s3_escape(text: str) -> str:
    # In IAM ARNs and string conditions '*' and '?' are wildcards and '${' starts a policy
    # variable; S3 keys may hold any of them literally ('$' first: the others add '$').
    return text.replace("$", "${$}").replace("*", "${*}").replace("?", "${?}")


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """A policy document and the notes a reader should see next to it (parts that had
    to be wildcards, permissions broader than the minimum and why)."""

    document: dict[str, Any]
    queue: QueueArn | None
    notes: tuple[str, ...]


def probe_key(state_key: str) -> str:
    """The doctor's probe object of the single layout: beside the state, never the state
    itself."""
    return state_key + PROBE_SUFFIX


def doctor_probe_key(config: Config) -> str:
    """The doctor's probe object for ``config``'s layout: :func:`probe_key` of the state
    key, or under ``folders`` the run object ``doctor-probe`` of the prefix (never a
    shard: run objects live apart from the shards)."""
    if config.state_layout == "folders":
        return runs_key(config.state_prefix, config.prefix, "doctor-probe")
    return probe_key(config.state_object_key)


def state_key_prefixes(config: Config) -> list[str]:
    """The key prefixes of the state objects under ``folders``: the prefix's shards and
    its run objects."""
    return [
        shards_prefix(config.state_prefix, config.prefix),
        runs_key(config.state_prefix, config.prefix, ""),
    ]


def build_policy(config: Config, *, region: str | None = None, doctor: bool = False) -> Policy:
    """The least-privilege IAM policy for ``config`` (see the module docstring).

    ``region`` names the queue's region when its URL does not (a moto URL). ``doctor``
    adds what ``async-discovery doctor`` needs on top: the probe object and the queue's
    attributes.
    """
    arn = queue_arn(config.queue_url, region=region) if config.queue_url else None
    s3 = f"arn:{arn.partition if arn else partition_of(region or '')}:s3:::"
    statements = _state_statements(config, s3)
    if arn is not None and not config.dry_run:
        statements.append(_allow(SID_SEND, "sqs:SendMessage", arn.arn))
    if doctor:
        statements += _doctor_statements(config, s3, arn)
    document = {"Version": POLICY_VERSION, "Statement": statements}
    return Policy(document=document, queue=arn, notes=arn.notes if arn else ())


def _allow(
    sid: str, action: str | list[str], resource: str | list[str], prefixes: list[str] | None = None
) -> dict[str, Any]:
    """One ``Allow`` statement; ``prefixes``: the ``s3:prefix`` values a listing may use
    (none: no condition)."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": action,
        "Resource": resource,
    }
    if prefixes:
        statement["Condition"] = {"StringLike": {"s3:prefix": prefixes}}
    return statement


def _state_statements(config: Config, s3: str) -> list[dict[str, Any]]:
    """Listing the scanned prefix, and reading, writing and listing the state."""
    folders = config.state_layout == "folders"
    # The state keys as IAM patterns: the one object, or under ``folders`` the shards'
    # and run objects' key prefixes (each then also the s3:prefix of a listing).
    state_raw = state_key_prefixes(config) if folders else [config.state_object_key]
    state_keys = [_s3_escape(key) + ("*" if folders else "") for key in state_raw]
    source = s3 + config.source_bucket
    actions = ["s3:GetObject", "s3:PutObject", *(["s3:DeleteObject"] if folders else [])]
    objects = [f"{s3}{config.state_bucket}/{key}" for key in state_keys]
    statements = [
        _allow(SID_LIST_SOURCE, "s3:ListBucket", source, _listed(config, state_raw, state_keys)),
        _allow(SID_STATE, actions, _one_or_list(objects)),
    ]
    if config.state_bucket != config.source_bucket:
        state_bucket = s3 + config.state_bucket
        statements.append(_allow(SID_LIST_STATE, "s3:ListBucket", state_bucket, state_keys))
    return statements


def _listed(config: Config, state_raw: list[str], state_keys: list[str]) -> list[str]:
    """The ``s3:prefix`` values of the source bucket's listings: the scanned prefix (and
    the folders under it); in the same bucket, also the state keys, the listings that
    tell "no state yet" from "forbidden" (and under ``folders`` find the prefix's
    shards). Empty for the whole bucket (no condition)."""
    if not config.prefix:
        return []
    prefixes = [_s3_escape(config.prefix) + "*"]
    if config.state_bucket == config.source_bucket:
        prefixes += [
            pattern
            for raw, pattern in zip(state_raw, state_keys, strict=True)
            if not raw.startswith(config.prefix)
        ]
    return prefixes


def _doctor_statements(config: Config, s3: str, arn: QueueArn | None) -> list[dict[str, Any]]:
    """What ``async-discovery doctor`` needs beyond a scan: the probe object, the
    queue's attributes."""
    probe = f"{s3}{config.state_bucket}/{_s3_escape(doctor_probe_key(config))}"
    statements = [_allow(SID_PROBE, ["s3:PutObject", "s3:DeleteObject"], probe)]
    if arn is not None:
        statements.append(_allow(SID_QUEUE_ATTRIBUTES, "sqs:GetQueueAttributes", arn.arn))
    return statements


def _one_or_list(items: list[str]) -> str | list[str]:
    return items[0] if len(items) == 1 else items


def grant(policy: Policy, sid: str, action: str | None = None) -> str:
    """The grant ``sid`` of ``policy`` in words, e.g. ``s3:GetObject on
    arn:aws:s3:::bucket/state/processed_files.json``; ``action`` picks one of its actions.
    A ``s3:prefix`` condition is named too. Raises KeyError for an unknown ``sid``."""
    for statement in policy.document["Statement"]:
        if statement.get("Sid") != sid:
            continue
        actions = statement["Action"]
        if action is not None:
            actions = action
        elif not isinstance(actions, str):
            actions = ", ".join(actions)
        resource = statement["Resource"]
        if not isinstance(resource, str):
            resource = " and ".join(resource)
        text = f"{actions} on {resource}"
        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if prefixes:
            text += " with s3:prefix " + " or ".join(prefixes)
        return text
    raise KeyError(sid)
