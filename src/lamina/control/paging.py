"""Marker/MaxItems pagination over an ordered list of keys, as the List* operations do it:
at most 50 items a page; `NextMarker` names the last key returned (opaque, base64)."""

from __future__ import annotations

import base64
import binascii

from lamina.control import validation as check
from lamina.errors import InvalidParameterValueException

PAGE_LIMIT = 50


def marker_after(marker: str | None, keys: list[str]) -> int:
    """The index in `keys` after the one `marker` names (0 without a marker)."""
    if not marker:
        return 0
    try:
        after = base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParameterValueException(f"Invalid Marker: {marker}") from None
    if after not in keys:
        raise InvalidParameterValueException(f"Invalid Marker: {marker}")
    return keys.index(after) + 1


def page_of(
    keys: list[str], marker: str | None, max_items: int | None
) -> tuple[list[str], str | None]:
    limit = PAGE_LIMIT if max_items is None else check._int_range(max_items, "maxItems", 1, 10000)
    limit = min(limit, PAGE_LIMIT)
    start = marker_after(marker, keys)
    page = keys[start : start + limit]
    more = start + limit < len(keys)
    next_marker = base64.urlsafe_b64encode(page[-1].encode()).decode() if more and page else None
    return page, next_marker
