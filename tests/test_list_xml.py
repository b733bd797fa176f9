"""The lean ListObjectsV2 parser: the same pages as botocore's, on real servers and faults.

The lister's pages are compared with botocore's own parsing of the same listing on moto
and on SeaweedFS (keys that need URL encoding included), the parser is fed the raw
bodies those servers sent, and bodies that are not listings (cut short, not XML, a
field missing or wrong) are retried as botocore retries a 500 and end as a
``ListingError``, never as another exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest

from async_discovery.aws import S3Lister, open_clients
from async_discovery.aws.list_xml import MalformedListing, install, parse_list_objects_v2
from async_discovery.errors import ListingError
from async_discovery.testing.fault_proxy import (
    FaultProxy,
    ProxiedRequest,
    Respond,
    Rewrite,
)

from .helpers import MotoEnv, scan

ATTEMPTS = 3  # MotoEnv.config's max_attempts

# Keys S3 lists URL-encoded (EncodingType=url): XML 1.0 cannot carry U+0001 raw.
AWKWARD = [
    "in/a b/space name.csv",
    "in/plus/a+b.csv",
    "in/plus/a%2Bb.csv",
    "in/pct/100%25 %.csv",
    "in/ünï/çødé 日本.csv",
    "in/emoji/\U0001f600 \U00010348.csv",
    "in/ctl/\x01x\x7f.csv",
    'in/q/it\'s "quoted" & <x>.csv',
    "in/trailing /space .csv",
    "in/tilde~/~.csv",
    "in/deep/er/x.csv",
    "in/top.csv",
]


Obj = tuple[str, str, int, datetime]
Pages = list[tuple[list[Obj], list[str]]]


def _botocore_pages(env: MotoEnv, bucket: str, **kw: Any) -> Pages:
    """The same listing through boto3's paginator and botocore's generic parser."""
    pages: Pages = []
    for page in env.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kw):
        objects = [
            (o["Key"], o["ETag"].strip('"'), o["Size"], o["LastModified"])
            for o in page.get("Contents", ())
        ]
        pages.append((objects, [p["Prefix"] for p in page.get("CommonPrefixes", ())]))
    return pages


async def _lean_pages(lister: S3Lister, prefix: str, **kw: Any) -> Pages:
    pages: Pages = []
    async for page in lister.pages(prefix, **kw):
        objects = [(o.key, o.etag, o.size, o.last_modified) for o in page.objects]
        pages.append((objects, page.common_prefixes))
    return pages


@pytest.mark.parametrize("page_size", [2, 1000])
async def test_pages_equal_botocores_for_awkward_keys(s3env: MotoEnv, page_size: int) -> None:
    bucket = s3env.new_bucket()
    for n, key in enumerate(AWKWARD):
        s3env.put(bucket, key, f"body {n}")
    async with open_clients(s3env.config(bucket, None)) as clients:
        lister = S3Lister(clients.s3, bucket, page_size=page_size)
        cases: list[tuple[str, dict[str, Any]]] = [
            ("in/", {"delimiter": False}),
            ("in/", {"delimiter": True}),
            ("in/", {"delimiter": False, "start_after": "in/plus/a+b.csv"}),
            ("in/ünï/", {"delimiter": True}),
            ("", {"delimiter": True}),
        ]
        for prefix, kw in cases:
            lean = await _lean_pages(lister, prefix, **kw)
            boto_kw: dict[str, Any] = {
                "Prefix": prefix,
                "PaginationConfig": {"PageSize": page_size},
            }
            if kw["delimiter"]:
                boto_kw["Delimiter"] = "/"
            if kw.get("start_after"):
                boto_kw["StartAfter"] = kw["start_after"]
            assert lean == _botocore_pages(s3env, bucket, **boto_kw), (prefix, kw)
        everything = await _lean_pages(lister, "in/", delimiter=False)
    assert [o[0] for objects, _ in everything for o in objects] == sorted(
        AWKWARD, key=lambda k: k.encode()
    )
    assert all(o[3].tzinfo is not None for objects, _ in everything for o in objects)


def _raw_bodies(env: MotoEnv, bucket: str, **kw: Any) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Each page's raw body as the server sent it, with botocore's parsed page."""
    bodies: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        bodies.append(http_response.content)

    env.s3.meta.events.register("after-call.s3.ListObjectsV2", keep)
    try:
        for page in env.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kw):
            yield bodies[-1], dict(page)
    finally:
        env.s3.meta.events.unregister("after-call.s3.ListObjectsV2", keep)


def test_parser_reads_what_the_servers_send(s3env: MotoEnv) -> None:
    bucket = s3env.new_bucket()
    for key in AWKWARD:
        s3env.put(bucket, key)
    pages = 0
    for delimiter in ("", "/"):
        kw = {"Prefix": "in/", "Delimiter": delimiter, "PaginationConfig": {"PageSize": 3}}
        for body, page in _raw_bodies(s3env, bucket, **kw):
            assert b"<EncodingType>url</EncodingType>" in body  # keys came encoded
            lean = parse_list_objects_v2(body)
            assert [(o.key, o.etag, o.size, o.last_modified) for o in lean.objects] == [
                (o["Key"], o["ETag"].strip('"'), o["Size"], o["LastModified"])
                for o in page.get("Contents", ())
            ]
            assert lean.common_prefixes == [p["Prefix"] for p in page.get("CommonPrefixes", ())]
            assert lean.truncated == page["IsTruncated"]
            assert lean.next_token == page.get("NextContinuationToken")
            pages += 1
    assert pages >= 6


# -- the parser alone ---------------------------------------------------------------

_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _body(items: str, *, ns: bool = True, encoded: bool = True, tail: str = "") -> bytes:
    xmlns = f' xmlns="{_NS}"' if ns else ""
    enc = "<EncodingType>url</EncodingType>" if encoded else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{xmlns}>'
        f"<Name>b</Name><Prefix>in/</Prefix>{enc}<IsTruncated>false</IsTruncated>"
        f"{items}{tail}</ListBucketResult>"
    ).encode()


def _item(key: str, etag: str = "&quot;abc&quot;", size: str = "3", when: str | None = None) -> str:
    stamp = "" if when is None else f"<LastModified>{when}</LastModified>"
    return f"<Contents><Key>{key}</Key>{stamp}<ETag>{etag}</ETag><Size>{size}</Size></Contents>"


def test_decoding_follows_the_answers_encoding_type() -> None:
    items = _item("in/a+b%2B%25.csv", when="2026-01-02T03:04:05.000Z")
    cps = "<CommonPrefixes><Prefix>in/x+y%2F/</Prefix></CommonPrefixes>"
    encoded = parse_list_objects_v2(_body(items + cps))
    plain = parse_list_objects_v2(_body(items + cps, encoded=False, ns=False))
    assert [o.key for o in encoded.objects] == ["in/a b+%.csv"]
    assert encoded.common_prefixes == ["in/x y//"]
    assert [o.key for o in plain.objects] == ["in/a+b%2B%25.csv"]  # as stored, not decoded
    assert plain.common_prefixes == ["in/x+y%2F/"]
    (obj,) = encoded.objects
    assert (obj.etag, obj.size, obj.last_modified.isoformat()) == (
        "abc",
        3,
        "2026-01-02T03:04:05+00:00",
    )


def test_entities_cdata_and_missing_optional_fields() -> None:
    body = _body(
        "<Contents><Key><![CDATA[in/c.csv]]></Key></Contents>"
        + _item("in/&#x41;&amp;.csv", etag="&#34;e&#34;", when="2026-01-02T03:04:05"),
        encoded=False,
    )
    page = parse_list_objects_v2(body)
    assert [(o.key, o.etag, o.size) for o in page.objects] == [
        ("in/c.csv", "", 0),
        ("in/A&.csv", "e", 3),
    ]
    assert page.objects[0].last_modified.year == 1970  # absent: the epoch, as before
    assert page.objects[1].last_modified.tzinfo is not None  # zoneless: UTC


def test_continuation() -> None:
    tail = "<NextContinuationToken>tok+/=</NextContinuationToken>"
    body = _body(_item("in/a.csv"), tail=tail).replace(b">false<", b"> true <")
    page = parse_list_objects_v2(body)
    assert (page.truncated, page.next_token) == (True, "tok+/=")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "not XML"),
        (b"<html>oops</html>", "<html>"),
        (_body(_item("in/a.csv")).replace(b"</Key>", b""), "not XML"),
        (_body("<Contents><Size>1</Size></Contents>"), "without a <Key>"),
        (_body("<CommonPrefixes></CommonPrefixes>"), "without a <Prefix>"),
        (_body(_item("in/a.csv", size="12x")), "not what S3 sends"),
        (_body(_item("in/a.csv", when="yesterday")), "not what S3 sends"),
        (_body(_item("in/a.csv")).replace(b">false<", b">true<"), "without a NextContinuation"),
    ],
)
def test_what_is_not_a_listing(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedListing, match=problem):
        parse_list_objects_v2(body)


def test_an_s3_error_document_is_told_apart() -> None:
    body = b"<Error><Code>InternalError</Code><Message>x</Message></Error>"
    with pytest.raises(MalformedListing) as caught:
        parse_list_objects_v2(body)
    assert caught.value.s3_error


def test_every_cut_of_a_body_is_malformed() -> None:
    body = _body(_item("in/a%20b.csv", when="2026-01-02T03:04:05.000Z") + _item("in/c.csv"))
    for end in range(len(body)):
        with pytest.raises(MalformedListing):
            parse_list_objects_v2(body[:end])


# -- through the hook, under faults ---------------------------------------------------


def _cut(
    request: ProxiedRequest, status: int, headers: Mapping[str, str], body: bytes
) -> tuple[int, Mapping[str, str], bytes]:
    """A listing body cut in half (the proxy sends it whole, with its new length)."""
    return status, headers, body[: len(body) // 2]


def _keyless(
    request: ProxiedRequest, status: int, headers: Mapping[str, str], body: bytes
) -> tuple[int, Mapping[str, str], bytes]:
    """Well-formed XML, but its first object lost its <Key>."""
    start, end = body.index(b"<Key>"), body.index(b"</Key>") + len(b"</Key>")
    return status, headers, body[:start] + body[end:]


async def _listed(config: Any, bucket: str, prefix: str = "incoming/") -> list[str]:
    async with open_clients(config) as clients:
        lister = S3Lister(clients.s3, bucket, page_size=2)
        pages = await _lean_pages(lister, prefix, delimiter=False)
    return [o[0] for objects, _ in pages for o in objects]


async def test_a_cut_body_is_retried_like_a_500(
    proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    keys = [f"incoming/a/{i}.csv" for i in range(5)]
    env.put_many(bucket, keys)
    rule = proxy.inject(Rewrite(_cut), "ListObjectsV2", times=1)
    listed = await _listed(env.config(bucket, None, endpoint_url=proxy.url), bucket)
    assert listed == keys and rule.hits == 1
    assert proxy.counts["ListObjectsV2"] == 3 + 1  # three pages, one of them twice


@pytest.mark.parametrize("change", [_cut, _keyless], ids=["cut", "keyless"])
async def test_a_body_that_stays_malformed_is_a_listing_error(
    proxy: FaultProxy, env: MotoEnv, bucket: str, change: Any
) -> None:
    env.put_many(bucket, [f"incoming/a/{i}.csv" for i in range(5)])
    proxy.inject(Rewrite(change), "ListObjectsV2")
    with pytest.raises(ListingError, match="InvalidListingResponse") as caught:
        await _listed(env.config(bucket, None, endpoint_url=proxy.url), bucket)
    assert "not a listing" in str(caught.value)
    assert proxy.counts["ListObjectsV2"] == ATTEMPTS  # botocore's retries, then given up


async def test_an_error_inside_a_200_keeps_its_code(
    proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    body = b"<Error><Code>SlowDown</Code><Message>reduce your rate</Message></Error>"
    proxy.inject(Respond(200, body, {"Content-Type": "application/xml"}), "ListObjectsV2")
    with pytest.raises(ListingError, match="SlowDown: reduce your rate"):
        await _listed(env.config(bucket, None, endpoint_url=proxy.url), bucket)
    assert proxy.counts["ListObjectsV2"] == ATTEMPTS


async def test_a_folder_with_a_malformed_listing_fails_alone(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    for folder in ("a", "b", "c"):
        env.put(bucket, f"incoming/{folder}/1.csv")
    proxy.inject(
        Rewrite(_keyless), "ListObjectsV2", when=lambda r: r.query.get("prefix") == "incoming/b/"
    )
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (summary["statusCode"], summary["queued"], summary["folder_errors"]) == (207, 2, 1)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/a/1.csv",
        "incoming/c/1.csv",
    ]


async def test_other_calls_on_the_client_keep_botocores_parser(
    proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    env.put(bucket, "incoming/a b/1+1.csv")
    async with open_clients(env.config(bucket, None, endpoint_url=proxy.url)) as clients:
        install(clients.s3)
        install(clients.s3)  # idempotent
        rule = proxy.inject(Rewrite(_cut), "ListObjectsV2", times=1)
        resp = await clients.s3.list_objects_v2(Bucket=bucket, Prefix="incoming/")
        assert rule.hits == 1  # botocore's own 200 check still retried the cut body
        assert [o["Key"] for o in resp["Contents"]] == ["incoming/a b/1+1.csv"]
        assert resp["IsTruncated"] is False
        lean = await _lean_pages(S3Lister(clients.s3, bucket), "incoming/", delimiter=True)
        assert lean == [([], ["incoming/a b/"])]
