"""The rows of the Imports step's tags-only file (collect.Collector._tags_only), planned a chunk at a time.

The persons outside every import file whose query membership changed are plan_query_tags' answer minus the
files' persons, and that answer names every current member of each query: a member whose state says the tag is
set only drops out here, once their state is read. Their states were read all at once (~4.6 KB of PersonState
each): a query of 215,000 members nobody else changed took more than the Imports step's 1,024 MB on every full
sync in import mode (300,000 peaked at 1.46 GB, 500,000 at 2.4 GB), so the step failed, was retried and failed
the same. They are now read TAGS_ONLY_READ_CHUNK at a time, and a row keeps its state only until its import is
done (at most `import_rows` of them held).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..mapping import Desired
from ..person_plan import PatchTags
from ..store import protocols
from .import_writer import _Row
from .tags import TAG_READ_CHUNK, tag_delta

#: states read at once while planning the tags-only rows (as the Tags step reads its members: tags.py)
TAGS_ONLY_READ_CHUNK = TAG_READ_CHUNK


def tags_only_files(
    states: protocols.PersonStates,
    integration_id: str,
    changes: dict[int, dict[str, bool]],
    allowed: Callable[[dict[str, bool]], dict[str, bool]],
    rows: int,
) -> Iterator[list[_Row]]:
    """The tags-only rows in key order, `rows` a file (the last may hold fewer): one row per person with a tag
    change to send (tags.tag_delta, as `allowed` passes it; the state decides: only profiles we keep get a tag,
    only tags we set are removed). Lazily: the next states are read once the caller asks for the next file."""
    keys = sorted(changes)
    pending: list[_Row] = []
    for start in range(0, len(keys), TAGS_ONLY_READ_CHUNK):
        chunk = keys[start : start + TAGS_ONLY_READ_CHUNK]
        known = states.get_many(integration_id, chunk)
        for key in chunk:
            state = known.get(key)
            if tags := allowed(tag_delta(changes[key], state, will_exist=False)):
                desired = Desired(str(key), {}, {}, {}, None, None, "")
                pending.append(_Row({"K_CONTACT": key}, desired, state, [PatchTags(str(key), tags)]))
        while len(pending) >= rows:
            yield pending[:rows]
            pending = pending[rows:]
    if pending:
        yield pending
