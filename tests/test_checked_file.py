"""A checked file keeps the parsed events of its first KEEP_PARSED_BYTES for the writing pass and
parses only the lines beyond: memory is bounded however large the file, and every line is
written once, in order, with its own line number."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from evstream.errors import ConcurrencyConflict
from evstream.publishing import publish_checked, validate_all


def lines(n: int, stream: str = "alice") -> bytes:
    return b"".join(
        json.dumps({"type": "t", "stream": stream, "data": {"n": i}}).encode() + b"\n"
        for i in range(n)
    )


@pytest.mark.parametrize("keep_bytes", [0, 1, 100, 10_000])
def test_every_line_is_written_once_in_order_whatever_was_kept(
    mock_store: Any, keep_bytes: int
) -> None:
    text = lines(20) + b"\n" + lines(5, "bob")  # a blank line in between
    source = io.BytesIO(text)
    checked = validate_all(source, keep_bytes=keep_bytes)
    kept_bytes = sum(size for size, _ in checked.kept)
    assert kept_bytes <= keep_bytes
    if checked.offset is not None:
        # The first line not kept starts right where the kept ones end.
        assert text[: checked.offset].count(b"\n") == checked.line - 1
    report = publish_checked(mock_store, source, checked)
    assert (report.published, report.read) == (25, 25)
    alice = [d["data"]["n"] for d in mock_store.events.find({"stream": "alice"}).sort("version", 1)]
    assert alice == list(range(20))
    assert mock_store.events.count_documents({"stream": "bob"}) == 5


def test_a_large_file_keeps_only_its_first_lines() -> None:
    text = lines(1000)
    checked = validate_all(io.BytesIO(text), keep_bytes=len(text) // 10)
    kept_bytes = sum(size for size, _ in checked.kept)
    assert len(text) // 10 - 60 < kept_bytes <= len(text) // 10  # as many as fit, no more
    assert checked.offset == kept_bytes and checked.line == len(checked.kept) + 1


def test_a_conflict_beyond_the_kept_lines_names_its_own_line(mock_store: Any) -> None:
    text = lines(10) + json.dumps({"type": "t", "stream": "alice", "expected_version": 3}).encode()
    source = io.BytesIO(text + b"\n")
    checked = validate_all(source, keep_bytes=200)  # the last line is parsed on the writing pass
    assert checked.offset is not None
    with pytest.raises(ConcurrencyConflict, match="line 11: stream 'alice' is at version 10"):
        publish_checked(mock_store, source, checked)
