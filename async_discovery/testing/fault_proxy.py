"""A fault-injecting HTTP proxy in front of a local S3/SQS endpoint (a moto server).

Tests and the benchmark point the scanner at :attr:`FaultProxy.url` instead of the moto
URL; every request is forwarded unchanged unless a :class:`Rule` says otherwise. It binds
to 127.0.0.1 only and forwards only to the upstream it was given (loopback in practice).

What it can do, per request, chosen by rules over the operation name and the request:

- :class:`Latency`: wait before forwarding (plus a global ``latency_ms`` on every request);
- :class:`S3Error`: answer with an S3 REST XML error (``InternalError`` 500, ``SlowDown`` 503…);
- :class:`SqsError`: answer with an SQS JSON-protocol error (``application/x-amz-json-1.0``,
  ``__type`` and the ``x-amzn-query-error`` header botocore reads the query-style code from);
- :class:`Drop`: close the connection mid-request, before or after forwarding upstream
  (after: the upstream did the work but the client never hears of it);
- :class:`Respond`: a fixed or computed response;
- :class:`Rewrite`: forward, then change the upstream's answer before it goes back
  (:func:`drop_listed_key`: a listing page that loses one of its keys);
- :class:`StripHeaders`: forward without some request headers (e.g. ``If-Match`` and
  ``If-None-Match``: a store that ignores conditional writes and answers 200). The
  upstream must not check signatures (moto does not): the headers were signed;
- :class:`FailEntries`: a ``SendMessageBatch`` whose chosen entries come back under
  ``Failed`` (those are never forwarded), the rest forwarded and answered for real;
- :class:`Hold`: a barrier: hold matching requests until ``count`` of them have arrived;
- :class:`Exclusive`: forward matching requests one at a time (a lock around the upstream
  call), e.g. to give moto's unlocked conditional ``PutObject`` real S3's atomicity.

Every rule that matches applies, in the order the rules were added; an action that answers
(error, drop, respond) ends the chain. ``times`` bounds how many requests a rule applies to
(None: forever). Requests are counted by operation as they arrive (:attr:`FaultProxy.counts`),
as forwarded (:attr:`FaultProxy.forwarded`) and as answered by a fault
(:attr:`FaultProxy.injected`).

Two ways to run it::

    async with FaultProxy(moto_url) as proxy:          # on the caller's event loop
        config = Config(..., endpoint_url=proxy.url)

    with ThreadedFaultProxy(moto_url) as proxy:        # its own thread and event loop
        ...                                            # (the proxy's CPU stays off the
                                                       #  scanner's loop: the benchmark)

A rule holds event-loop objects (barrier, lock) once used: give each proxy its own rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

__all__ = [
    "Action",
    "Drop",
    "Exclusive",
    "FailEntries",
    "FaultProxy",
    "Hold",
    "Latency",
    "ProxiedRequest",
    "Respond",
    "Rewrite",
    "Rule",
    "S3Error",
    "SqsError",
    "StripHeaders",
    "ThreadedFaultProxy",
    "continues_listing",
    "drop_listed_key",
    "operation_of",
]

SQS_JSON = "application/x-amz-json-1.0"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
        "content-length",
    }
)
_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "server",
        "date",
    }
)


# -- requests ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """What a rule's predicate sees: one request as the proxy received it."""

    service: str  # "s3", "sqs" or "" when unknown
    operation: str  # e.g. "ListObjectsV2", "PutObject", "SendMessageBatch"
    method: str
    path: str  # URL-decoded path, e.g. "/bucket/state/processed_files.json"
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    @property
    def bucket(self) -> str | None:
        """The S3 bucket of a path-style request (None for SQS or ``/``)."""
        if self.service != "s3":
            return None
        name = self.path.lstrip("/").split("/", 1)[0]
        return name or None

    @property
    def key(self) -> str | None:
        """The S3 object key of a path-style request (None for bucket-level calls)."""
        if self.service != "s3":
            return None
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) == 2 and parts[1] else None

    def json(self) -> Any:
        """The body decoded as JSON (SQS JSON protocol); None when it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def _service_of(headers: Mapping[str, str]) -> str:
    target = headers.get("X-Amz-Target", "")
    if target.startswith("AmazonSQS."):
        return "sqs"
    # SigV4 credential scope: Credential=AKID/20250101/us-east-1/<service>/aws4_request
    auth = headers.get("Authorization", "")
    for service in ("sqs", "s3"):
        if f"/{service}/aws4_request" in auth:
            return service
    return "s3"


_S3_BUCKET_SUBRESOURCES = {
    "location": "BucketLocation",
    "versioning": "BucketVersioning",
    "tagging": "BucketTagging",
    "policy": "BucketPolicy",
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "lifecycle": "BucketLifecycleConfiguration",
    "notification": "BucketNotificationConfiguration",
    "encryption": "BucketEncryption",
}


def operation_of(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """The AWS operation name of a request (S3 REST path-style, or SQS JSON/query)."""
    method = method.upper()
    service = _service_of(headers)
    if service == "sqs":
        target = headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSQS."):
            return target[len("AmazonSQS.") :]
        return query.get("Action", "SQS")
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) == 2 else ""
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method}Service"
    if not key:
        if method == "GET":
            if query.get("list-type") == "2":
                return "ListObjectsV2"
            if "versions" in query:
                return "ListObjectVersions"
            if "uploads" in query:
                return "ListMultipartUploads"
            for sub, name in _S3_BUCKET_SUBRESOURCES.items():
                if sub in query:
                    return "Get" + name
            return "ListObjects"
        if method == "PUT":
            for sub, name in _S3_BUCKET_SUBRESOURCES.items():
                if sub in query:
                    return "Put" + name
            return "CreateBucket"
        if method == "DELETE":
            for sub, name in _S3_BUCKET_SUBRESOURCES.items():
                if sub in query:
                    return "Delete" + name
            return "DeleteBucket"
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return f"{method}Bucket"
    if method == "GET":
        if "tagging" in query:
            return "GetObjectTagging"
        if "uploadId" in query:
            return "ListParts"
        return "GetObject"
    if method == "PUT":
        if "uploadId" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    return f"{method}Object"


# -- actions -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Latency:
    """Wait ``seconds`` before going on (to the next rule, or upstream)."""

    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class S3Error:
    """An S3 REST error: XML ``<Error><Code>…`` with ``status`` (no body for HEAD)."""

    code: str = "InternalError"
    status: int = 500
    message: str = "We encountered an internal error. Please try again."

    @classmethod
    def slow_down(cls) -> S3Error:
        """``503 SlowDown``, S3's throttling answer."""
        return cls("SlowDown", 503, "Please reduce your request rate.")


@dataclasses.dataclass(frozen=True, slots=True)
class SqsError:
    """An SQS JSON-protocol error.

    ``code`` goes into ``__type`` (``com.amazonaws.sqs#<code>``); ``query_code``, when
    set, into the ``x-amzn-query-error`` header (``<query_code>;Sender|Receiver``), which
    botocore prefers as the error code, as real SQS sends for query-compatible errors.
    """

    code: str = "InternalError"
    status: int = 500
    message: str = "We encountered an internal error. Please try again."
    query_code: str | None = None

    @classmethod
    def queue_does_not_exist(cls) -> SqsError:
        """What SQS answers for an unknown queue URL."""
        return cls(
            "QueueDoesNotExist",
            400,
            "The specified queue does not exist.",
            "AWS.SimpleQueueService.NonExistentQueue",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without an answer; ``after_forward``: once upstream answered."""

    after_forward: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Respond:
    """A chosen response; ``make``, when given, builds ``(status, headers, body)``."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    make: Callable[[ProxiedRequest], tuple[int, Mapping[str, str], bytes]] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rewrite:
    """Forward the request, then answer with ``change(request, status, headers, body)``
    of the upstream's answer (ends the chain, like :class:`Respond`)."""

    change: Callable[
        [ProxiedRequest, int, Mapping[str, str], bytes], tuple[int, Mapping[str, str], bytes]
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class StripHeaders:
    """Forward without the request headers ``names`` (any case); the chain goes on."""

    names: Collection[str]

    @classmethod
    def conditional(cls) -> StripHeaders:
        """Without ``If-Match`` / ``If-None-Match``: a store that ignores conditional
        writes (a ``PutObject`` it should refuse with 412 is stored and answered 200)."""
        return cls(("If-Match", "If-None-Match"))


@dataclasses.dataclass(frozen=True, slots=True)
class FailEntries:
    """A ``SendMessageBatch`` with the entries ``select`` picks answered under ``Failed``.

    Picked entries never reach the upstream; the others are forwarded and their real
    results returned, so the response is a 200 with both ``Successful`` and ``Failed``,
    as SQS sends for a partly failed batch. ``select`` sees each request entry (a dict
    with ``Id``, ``MessageBody`` …).
    """

    select: Callable[[Mapping[str, Any]], bool]
    code: str = "InternalError"
    sender_fault: bool = False
    message: str = "injected entry failure"


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """A barrier: hold matching requests until ``count`` have arrived, then let all go.

    After ``timeout`` seconds a held request goes on anyway (the rule then reports
    :attr:`Rule.timed_out`), so a mistaken test fails instead of hanging.
    """

    count: int
    timeout: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Exclusive:
    """Forward matching requests one at a time (all requests matching this rule share a lock)."""


Action = (
    Latency
    | S3Error
    | SqsError
    | Drop
    | Respond
    | Rewrite
    | StripHeaders
    | FailEntries
    | Hold
    | Exclusive
)


def continues_listing(request: ProxiedRequest) -> bool:
    """A predicate for rules: a ``ListObjectsV2`` that continues a listing (it carries
    ``continuation-token`` or ``start-after``), not the first page of one."""
    return request.operation == "ListObjectsV2" and (
        "continuation-token" in request.query or "start-after" in request.query
    )


_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)


def drop_listed_key(
    index: int = 0,
) -> Callable[
    [ProxiedRequest, int, Mapping[str, str], bytes], tuple[int, Mapping[str, str], bytes]
]:
    """A :class:`Rewrite` change that removes the ``index``-th ``<Contents>`` (one key)
    from a listing page, leaving ``IsTruncated`` and the continuation token as they were:
    a store that loses a key between pages. Other answers pass unchanged."""

    def change(
        request: ProxiedRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        found = list(_CONTENTS.finditer(body))
        if status != 200 or len(found) <= index:
            return status, headers, body
        hit = found[index]
        return status, headers, body[: hit.start()] + body[hit.end() :]

    return change


@dataclasses.dataclass(eq=False)
class Rule:
    """Apply ``action`` to requests of ``operation`` (a name, several, or None: any) for
    which ``when`` (if given) is true, ``times`` times (None: forever).

    ``hits`` counts the requests it applied to.
    """

    action: Action
    operation: str | Collection[str] | None = None
    when: Callable[[ProxiedRequest], bool] | None = None
    times: int | None = None
    hits: int = dataclasses.field(default=0, init=False)
    timed_out: bool = dataclasses.field(default=False, init=False)
    _arrived: int = dataclasses.field(default=0, init=False, repr=False)
    _event: asyncio.Event | None = dataclasses.field(default=None, init=False, repr=False)
    _lock: asyncio.Lock | None = dataclasses.field(default=None, init=False, repr=False)

    def matches(self, request: ProxiedRequest) -> bool:
        """True when the rule still applies and selects ``request``."""
        if self.times is not None and self.hits >= self.times:
            return False
        op = self.operation
        if op is not None:
            if isinstance(op, str):
                if op != request.operation:
                    return False
            elif request.operation not in op:
                return False
        return self.when is None or bool(self.when(request))

    @property
    def exhausted(self) -> bool:
        """True once the rule has applied ``times`` times."""
        return self.times is not None and self.hits >= self.times


# -- the proxy -----------------------------------------------------------------------


class _Dropped(Exception):
    """Internal: the connection was dropped on purpose."""


class FaultProxy:
    """The proxy on the current event loop; ``async with`` starts and stops it."""

    def __init__(
        self,
        upstream: str,
        *,
        latency_ms: float = 0.0,
        rules: Collection[Rule] = (),
        record: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy binds to loopback only")
        self.upstream = upstream.rstrip("/")
        self.latency_ms = latency_ms
        self.rules: list[Rule] = list(rules)
        self.record = record
        self.requests: list[ProxiedRequest] = []
        self.counts: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # rules and counters may be read from another thread
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    # lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the endpoint URL to give the clients."""
        if self._url is None:
            raise RuntimeError("the proxy is not started")
        return self._url

    async def start(self) -> None:
        """Bind the port and start serving."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving and close the upstream connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # rules and counters

    def add(self, rule: Rule) -> Rule:
        """Add a rule (applied after those already there); returns it, to read ``hits``."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def inject(
        self,
        action: Action,
        operation: str | Collection[str] | None = None,
        *,
        when: Callable[[ProxiedRequest], bool] | None = None,
        times: int | None = None,
    ) -> Rule:
        """Shorthand for ``add(Rule(action, operation, when, times))``."""
        return self.add(Rule(action, operation, when, times))

    def clear(self) -> None:
        """Remove every rule (requests in flight finish as they started)."""
        with self._lock:
            self.rules.clear()

    def reset_counts(self) -> None:
        """Zero the counters and forget recorded requests."""
        with self._lock:
            self.counts.clear()
            self.forwarded.clear()
            self.injected.clear()
            self.requests.clear()

    # serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query = {k: v for k, v in request.query.items()}
        info = ProxiedRequest(
            service=_service_of(request.headers),
            operation=operation_of(request.method, request.path, query, request.headers),
            method=request.method,
            path=unquote(request.raw_path.split("?", 1)[0]),
            query=query,
            headers=request.headers,
            body=body,
        )
        with self._lock:
            self.counts[info.operation] += 1
            if self.record:
                self.requests.append(info)
            applied: list[Rule] = []
            for rule in self.rules:
                if rule.matches(info):
                    rule.hits += 1
                    applied.append(rule)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000.0)
        try:
            return await self._apply(request, info, applied)
        except _Dropped:
            return _dropped_response(request)

    async def _apply(
        self,
        request: web.Request,
        info: ProxiedRequest,
        rules: list[Rule],
        strip: set[str] | None = None,
    ) -> web.StreamResponse:
        strip = set() if strip is None else strip  # request headers not forwarded
        forward: Callable[[bytes], Awaitable[tuple[int, Mapping[str, str], bytes]]]
        forward = self._forward_fn(request, info, strip)
        for index, rule in enumerate(rules):
            action = rule.action
            if isinstance(action, Latency):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, StripHeaders):
                strip.update(name.lower() for name in action.names)
            elif isinstance(action, Hold):
                await self._hold(rule, action)
            elif isinstance(action, Exclusive):
                if rule._lock is None:
                    rule._lock = asyncio.Lock()
                async with rule._lock:
                    return await self._apply(request, info, rules[index + 1 :], strip)
            elif isinstance(action, Drop):
                if action.after_forward:
                    await forward(info.body)
                self._count_injected(info)
                _drop(request)
                raise _Dropped
            elif isinstance(action, S3Error):
                self._count_injected(info)
                return _s3_error(action, info)
            elif isinstance(action, SqsError):
                self._count_injected(info)
                return _sqs_error(action)
            elif isinstance(action, Respond):
                self._count_injected(info)
                if action.make is not None:
                    status, headers, payload = action.make(info)
                else:
                    status, headers, payload = action.status, action.headers, action.body
                return _response(info, status, headers, payload)
            elif isinstance(action, Rewrite):
                self._count_injected(info)
                status, headers, payload = await forward(info.body)
                status, headers, payload = action.change(info, status, headers, payload)
                return _response(info, status, headers, payload)
            elif isinstance(action, FailEntries):
                self._count_injected(info)
                return await self._fail_entries(info, action, forward)
        status, headers, payload = await forward(info.body)
        return _response(info, status, headers, payload)

    def _count_injected(self, info: ProxiedRequest) -> None:
        with self._lock:
            self.injected[info.operation] += 1

    async def _hold(self, rule: Rule, action: Hold) -> None:
        if rule._event is None:
            rule._event = asyncio.Event()
        rule._arrived += 1
        if rule._arrived >= action.count:
            rule._event.set()
        try:
            await asyncio.wait_for(rule._event.wait(), action.timeout)
        except TimeoutError:
            rule.timed_out = True
            rule._event.set()

    def _forward_fn(
        self, request: web.Request, info: ProxiedRequest, strip: Collection[str] = ()
    ) -> Callable[[bytes], Awaitable[tuple[int, Mapping[str, str], bytes]]]:
        async def forward(payload: bytes) -> tuple[int, Mapping[str, str], bytes]:
            assert self._session is not None
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() not in strip
            }
            async with self._session.request(
                request.method,
                self.upstream + request.raw_path,
                headers=headers,
                data=payload if payload else None,
                allow_redirects=False,
            ) as resp:
                data = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in _RESPONSE_DROP}
                if request.method == "HEAD" and "Content-Length" in resp.headers:
                    out["Content-Length"] = resp.headers["Content-Length"]
                with self._lock:
                    self.forwarded[info.operation] += 1
                return resp.status, out, data

        return forward

    async def _fail_entries(
        self,
        info: ProxiedRequest,
        action: FailEntries,
        forward: Callable[[bytes], Awaitable[tuple[int, Mapping[str, str], bytes]]],
    ) -> web.StreamResponse:
        doc = info.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("Entries"), list):
            status, headers, payload = await forward(info.body)
            return _response(info, status, headers, payload)
        entries: list[dict[str, Any]] = doc["Entries"]
        picked = [bool(action.select(e)) for e in entries]  # once each: select may count
        failed = [e for e, p in zip(entries, picked, strict=True) if p]
        kept = [e for e, p in zip(entries, picked, strict=True) if not p]
        result: dict[str, Any] = {"Successful": [], "Failed": []}
        if kept:
            status, headers, payload = await forward(json.dumps({**doc, "Entries": kept}).encode())
            if status != 200:
                return _response(info, status, headers, payload)
            upstream = json.loads(payload)
            result["Successful"] = upstream.get("Successful", [])
            result["Failed"] = upstream.get("Failed", [])
        for entry in failed:
            result["Failed"].append(
                {
                    "Id": entry.get("Id"),
                    "SenderFault": action.sender_fault,
                    "Code": action.code,
                    "Message": action.message,
                }
            )
        return web.Response(
            status=200,
            body=json.dumps(result).encode(),
            headers={"Content-Type": SQS_JSON, "x-amzn-RequestId": str(uuid.uuid4())},
        )


def _response(
    info: ProxiedRequest, status: int, headers: Mapping[str, str], payload: bytes
) -> web.Response:
    if info.method == "HEAD":
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, headers=headers, body=payload)


def _s3_error(error: S3Error, info: ProxiedRequest) -> web.Response:
    request_id = uuid.uuid4().hex[:16].upper()
    headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
    if info.method == "HEAD":
        return web.Response(status=error.status, headers=headers)
    resource = info.path
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{_xml(error.code)}</Code><Message>{_xml(error.message)}</Message>"
        f"<Resource>{_xml(resource)}</Resource><RequestId>{request_id}</RequestId>"
        "<HostId>fault-proxy</HostId></Error>"
    )
    return web.Response(status=error.status, headers=headers, body=body.encode())


def _sqs_error(error: SqsError) -> web.Response:
    headers = {"Content-Type": SQS_JSON, "x-amzn-RequestId": str(uuid.uuid4())}
    if error.query_code:
        fault = "Sender" if error.status < 500 else "Receiver"
        headers["x-amzn-query-error"] = f"{error.query_code};{fault}"
    body = {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}
    return web.Response(status=error.status, headers=headers, body=json.dumps(body).encode())


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _dropped_response(request: web.Request) -> web.StreamResponse:
    # The transport is gone; aiohttp discards a response it cannot write.
    return web.Response(status=599)


# -- threaded variant ----------------------------------------------------------------


class ThreadedFaultProxy:
    """A :class:`FaultProxy` on its own event loop in a daemon thread.

    ``with ThreadedFaultProxy(upstream) as proxy`` returns the running :class:`FaultProxy`;
    its rules and counters may be used from the caller's thread (they are locked).
    """

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        self._proxy = FaultProxy(upstream, **kwargs)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def proxy(self) -> FaultProxy:
        """The proxy running in the thread."""
        return self._proxy

    def start(self, timeout: float = 10.0) -> FaultProxy:
        """Start the thread and wait until the proxy listens."""
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the fault proxy did not start")
        if self._error is not None:
            raise RuntimeError("the fault proxy did not start") from self._error
        return self._proxy

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the proxy and join its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._proxy.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._proxy.close()
