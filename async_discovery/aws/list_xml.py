"""ListObjectsV2 pages parsed lean: the fields the scanner uses, by the C XML parser.

botocore turns each listing page into dictionaries by walking the output shape per key
(``_handle_structure``/``_parse_shape``), after its ``_handle_200_error`` hook has
already parsed the whole body once to look for an error hidden in a 200. For the
lister's calls (:func:`list_page`) one hook (:func:`install`) replaces both: the
success body is parsed once by ElementTree's C parser straight into
:class:`~async_discovery.models.ListedObject` values (key, ETag, size, last modified),
common prefixes and the continuation, and botocore is handed an empty body.

Everything else stays botocore's: the request is built, signed, sent and retried by
aiobotocore, an error status is parsed and mapped by botocore (``ClientError``), and
every other call, ListObjectsV2 included, goes through botocore's own hook unchanged.

- Keys are asked for with ``EncodingType=url`` (as botocore does on its own) and
  decoded as botocore decodes them (``unquote_plus``, only when the answer says
  ``<EncodingType>url</EncodingType>``), so spaces, ``+``, ``%``, characters beyond
  the BMP and control characters XML 1.0 cannot carry come back exactly as stored.
- A 200 whose body is not a listing (not XML, cut short, another root element, a
  ``<Contents>`` without ``<Key>``, a size that is not an integer, ``IsTruncated``
  without a token) is turned into a 500, as botocore's own hook does with a body it
  cannot parse: botocore's retry policy retries it like any 500 and, once the attempts
  are spent, raises a ``ClientError`` (code ``InvalidListingResponse``, the parse
  problem in its message). A 200 carrying an S3 ``<Error>`` document is a 500 with
  that error, as in botocore.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus
from xml.etree.ElementTree import Element, ParseError, fromstring
from xml.sax.saxutils import escape

from botocore import handlers as botocore_handlers

from ..models import ListedObject
from .clients import parse_timestamp

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["ListPage", "MalformedListing", "install", "list_page", "parse_list_objects_v2"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOOK_ID = "async-discovery-lean-listing"
_EVENT = "before-parse.s3.*"


def _botocore_200_check() -> Any:
    """botocore's check for an error inside a 200 (it parses every S3 body), when it is
    registered where this module expects it: ours does the same for the lister's calls
    while parsing, so it stands aside for them only (None: leave botocore's alone)."""
    handler = getattr(botocore_handlers, "_handle_200_error", None)
    builtin = getattr(botocore_handlers, "BUILTIN_HANDLERS", ())
    registered = any(entry[0] == _EVENT and entry[1] is handler for entry in builtin)
    return handler if handler is not None and registered else None


_HANDLE_200_ERROR = _botocore_200_check()
ERROR_CODE = "InvalidListingResponse"


class MalformedListing(ValueError):
    """A ListObjectsV2 body that is not a listing; ``s3_error``: it is an S3
    ``<Error>`` document (botocore then parses the error from it)."""

    def __init__(self, message: str, *, s3_error: bool = False) -> None:
        super().__init__(message)
        self.s3_error = s3_error


@dataclasses.dataclass(slots=True)
class ListPage:
    """One ListObjectsV2 page: objects, rolled-up prefixes, and the continuation."""

    objects: list[ListedObject]
    common_prefixes: list[str]
    truncated: bool
    next_token: str | None


def _namespace(root: Element) -> str:
    tag = root.tag
    return tag[: tag.index("}") + 1] if tag[:1] == "{" else ""


def parse_list_objects_v2(body: bytes) -> ListPage:
    """The page in a ListObjectsV2 response body; raises :class:`MalformedListing`."""
    try:
        root = fromstring(body)
    except ParseError as exc:
        raise MalformedListing(f"the body is not XML ({exc})") from None
    ns = _namespace(root)
    name = root.tag[len(ns) :]
    if name != "ListBucketResult":
        raise MalformedListing(f"the body is <{name}>, not a listing", s3_error=name == "Error")
    contents, common, key_tag, prefix_tag = (
        ns + "Contents",
        ns + "CommonPrefixes",
        ns + "Key",
        ns + "Prefix",
    )
    etag_tag, size_tag, modified_tag = ns + "ETag", ns + "Size", ns + "LastModified"
    encoded = root.findtext(ns + "EncodingType") == "url"
    truncated = (root.findtext(ns + "IsTruncated") or "").strip().lower() == "true"
    token = root.findtext(ns + "NextContinuationToken")
    if truncated and not token:
        raise MalformedListing("IsTruncated is true without a NextContinuationToken")
    objects: list[ListedObject] = []
    append = objects.append
    prefixes: list[str] = []
    stamps: dict[str, datetime] = {}  # objects written together share a timestamp
    try:
        for item in root.findall(contents):
            key = item.findtext(key_tag)
            if key is None:
                raise MalformedListing("a <Contents> without a <Key>")
            if encoded and ("%" in key or "+" in key):
                key = unquote_plus(key)
            etag = item.findtext(etag_tag) or ""
            if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
                etag = etag[1:-1]
            stamp = item.findtext(modified_tag)
            if stamp is None:
                moment = _EPOCH
            else:
                found = stamps.get(stamp)
                if found is None:
                    found = stamps[stamp] = parse_timestamp(stamp.strip())
                moment = found
            append(ListedObject(key, etag, int(item.findtext(size_tag) or 0), moment))
        for item in root.findall(common):
            prefix = item.findtext(prefix_tag)
            if prefix is None:
                raise MalformedListing("a <CommonPrefixes> without a <Prefix>")
            prefixes.append(unquote_plus(prefix) if encoded else prefix)
    except (ValueError, OverflowError) as exc:  # int(), the timestamp
        if isinstance(exc, MalformedListing):
            raise
        raise MalformedListing(f"a value is not what S3 sends ({exc})") from None
    return ListPage(objects, prefixes, truncated, token)


class _Slot:
    """Where the hook leaves the page of the call that set it (see :func:`list_page`)."""

    __slots__ = ("page",)

    def __init__(self) -> None:
        self.page: ListPage | None = None


# Set around one lister call: the hook parses only that call's response (the client
# is shared; other ListObjectsV2 calls keep botocore's parser).
_SLOT: ContextVar[_Slot | None] = ContextVar("async_discovery_lean_listing", default=None)


def _before_parse(
    operation_model: Any,
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """botocore's ``before-parse.s3.*`` hook, in place of its ``_handle_200_error``."""
    slot = _SLOT.get()
    if slot is None or operation_model.name != "ListObjectsV2":
        if _HANDLE_200_ERROR is not None:
            _HANDLE_200_ERROR(operation_model, response_dict, **kwargs)
        return
    if response_dict["status_code"] >= 300:
        return  # an error: botocore parses and maps it
    try:
        slot.page = parse_list_objects_v2(response_dict["body"])
    except MalformedListing as exc:
        slot.page = None
        response_dict["status_code"] = 500  # retried as a 500, as botocore would
        if not exc.s3_error:
            response_dict["body"] = _error_body(str(exc))
        return
    response_dict["body"] = b""  # nothing left for botocore's parser to do


def _error_body(problem: str) -> bytes:
    message = f"ListObjectsV2 answered 200 with a body that is not a listing: {problem}"
    return (
        f"<Error><Code>{ERROR_CODE}</Code><Message>{escape(message)}</Message></Error>"
    ).encode()


def install(client: S3Client) -> None:
    """Put the lean hook on ``client``'s events (once per client; idempotent)."""
    events = client.meta.events
    if _HANDLE_200_ERROR is not None:
        events.unregister(_EVENT, _HANDLE_200_ERROR)
    events.register_first(_EVENT, _before_parse, unique_id=_HOOK_ID)


async def list_page(client: S3Client, params: dict[str, Any]) -> ListPage:
    """One ``list_objects_v2`` call through aiobotocore, its body parsed lean.

    ``client`` must have the hook (:func:`install`); botocore's errors propagate."""
    slot = _Slot()
    token = _SLOT.set(slot)
    try:
        await client.list_objects_v2(**params)
    finally:
        _SLOT.reset(token)
    if slot.page is None:
        raise RuntimeError("list_page: the client has no lean listing hook (install it)")
    return slot.page
