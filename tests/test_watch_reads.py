"""What a watch reads must see the latest writes: the handover's log read, its change stream
and the checkpoints go to the primary, whatever read preference the URI asks for, and the log
read has majority read concern, as the change stream has (docs/handover.md, "Reads")."""

from __future__ import annotations

from typing import Any

import pymongo.collection
from pymongo.read_preferences import ReadPreference
from test_watch_cli import logins, publish

from evstream.settings import Settings
from evstream.storage import connect
from evstream.watching import Hooks, Watcher, WatchOptions


def with_option(uri: str, option: str) -> str:
    if "?" in uri:
        return f"{uri}&{option}"
    return f"{uri.rstrip('/')}/?{option}"


def test_handover_reads_go_to_the_primary_with_majority_read_concern(cli, monkeypatch):
    publish(cli, logins("alice", 3))
    seen: list[tuple[str, str, Any, Any]] = []
    real_find, real_watch = pymongo.collection.Collection.find, pymongo.collection.Collection.watch

    def find(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("find", self.name, self.read_preference, self.read_concern.level))
        return real_find(self, *args, **kwargs)

    def watch(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("watch", self.name, self.read_preference, self.read_concern.level))
        return real_watch(self, *args, **kwargs)

    monkeypatch.setattr(pymongo.collection.Collection, "find", find)
    monkeypatch.setattr(pymongo.collection.Collection, "watch", watch)
    uri = with_option(cli.uri, "readPreference=secondaryPreferred")
    store = connect(Settings(uri=uri, db=cli.db), lambda message: None)
    try:
        shown: list[Any] = []
        options = WatchOptions(start="start", checkpoint="cp", idle_timeout=0.5)
        Watcher(store, options, Hooks(shown.append)).run()
    finally:
        store.close()
    assert [c.doc["version"] for c in shown] == [1, 2, 3]
    assert {kind for kind, *_ in seen} == {"find", "watch"}
    assert all(pref == ReadPreference.PRIMARY for *_, pref, _ in seen), seen
    log_reads = [level for kind, name, _, level in seen if kind == "find" and name == "events"]
    assert log_reads == ["majority"], seen
