"""evstream.runtime.fewer_collections: bulk passes run the cyclic collector less often, and put
its thresholds back whatever happens."""

from __future__ import annotations

import gc
import io

import pytest

from evstream.publishing import validate_all
from evstream.runtime import BULK_THRESHOLD, fewer_collections


def test_thresholds_are_raised_inside_and_put_back_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold()[0] == max(BULK_THRESHOLD, before[0])
        assert gc.isenabled()  # the collector still runs: cycles are still freed
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_a_checking_pass_runs_with_fewer_collections_and_restores_them() -> None:
    before = gc.get_threshold()
    seen = []
    kept = validate_all(
        io.BytesIO(b'{"type": "login", "stream": "alice"}\n' * 3),
        progress=lambda n: seen.append(gc.get_threshold()[0]),
    )
    assert len(kept.kept) == 3 and kept.offset is None
    assert seen and all(t >= BULK_THRESHOLD for t in seen)
    assert gc.get_threshold() == before
