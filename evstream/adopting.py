"""`evstream init`: propose a field map for a log that another application shaped, from a sample
of its documents, and write it to `evstream.toml` (docs/adopting.md)."""

from __future__ import annotations

from pathlib import Path

from evstream.errors import InvalidInput
from evstream.fieldmap import Proposal, propose
from evstream.storage import Store
from evstream.storage.errors import translate_errors
from evstream.storage.log import sample_documents

DEFAULT_SAMPLE = 1000
CONFIG_NAME = "evstream.toml"


def propose_map(
    store: Store, collection: str | None = None, sample: int = DEFAULT_SAMPLE
) -> Proposal:
    """Sample up to `sample` documents of `collection` (default: the log's collection) and
    propose a map; an empty or missing collection is InvalidInput (exit 2), never a guess."""
    name = collection or store.log_name
    if sample < 1:
        raise InvalidInput(f"--sample must be 1 or more, not {sample}")
    with translate_errors(store.uri):
        names = set(store.db.list_collection_names())
        if name not in names:
            raise InvalidInput(
                f"the collection {store.db.name}.{name} does not exist: nothing to propose a map "
                "from",
                hint="name the collection your application writes: evstream init COLLECTION "
                "(and check --db or the URI)",
            )
        docs = sample_documents(store, name, sample)
    if not docs:
        raise InvalidInput(
            f"the collection {store.db.name}.{name} is empty: nothing to propose a map from",
            hint="run it once your application has written some events",
        )
    return propose(name, docs)


def write_config(proposal: Proposal, directory: Path | None = None) -> Path:
    """Create `evstream.toml` holding the proposed `[log]` table; an existing file is never
    overwritten (InvalidInput, exit 2)."""
    path = (directory or Path.cwd()) / CONFIG_NAME
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(
                "# Written by 'evstream init' from a sample of the collection's documents;\n"
                "# see docs/adopting.md for what each key means.\n"
            )
            out.write(proposal.fieldmap.toml())
    except FileExistsError:
        raise InvalidInput(
            f"{path} exists already; evstream init never overwrites it",
            hint="add the [log] table printed above to it yourself",
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
