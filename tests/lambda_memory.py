"""What the memory tests compare with: a function's MemorySize as template.yaml gives it (its own, or the
Globals'), and the peak RSS of a subprocess (VmHWM: ru_maxrss would carry the pytest parent's peak over exec)."""

from __future__ import annotations

import yaml

from tests.support import ROOT

#: the first lines of a measuring subprocess's script: `hwm()` is its peak RSS in kB so far
HWM = """
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
"""


class _Loader(yaml.SafeLoader):
    """template.yaml's intrinsic functions (!Ref, !Sub ...) read as None: only literal settings are needed."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def memory_of(function: str) -> int:
    """The function's MemorySize in MB."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    props = template["Resources"][function]["Properties"]
    return int(props.get("MemorySize") or template["Globals"]["Function"]["MemorySize"])


#: script lines defining `demo_state(key, integration_id)`: a person of examples/demo.yaml synced with every
#: attribute, consent and tag (the size of what the store keeps per person)
DEMO_STATE = r"""
from efficy_sync.state import PersonState, utc_now, value_hash

ATTRS = ["com.apsis1.attributes.email", "com.apsis1.attributes.firstname", "com.apsis1.attributes.lastname",
         "com.apsis1.attributes.mobile", "usercreated.attributes.language"]

def demo_state(key, integration_id="demo"):
    return PersonState(
        integration_id=integration_id, person_key=str(key), change_stamp="2026-01-01T10:00:00.000000",
        asked_at="2026-01-01T10:00:00.000000", answered_at="2026-01-01T10:00:00.100000",
        attribute_hashes={a: value_hash(f"{a}{key}") for a in ATTRS},
        consents={"usercreated.topics.newsletter-ab12|email": "opt-in",
                  "usercreated.topics.sms-offers-cd34|sms": "opt-in",
                  "usercreated.topics.events-ef56|email": "opt-in"},
        tags={"newsletter-readers": True, "sms-club": True, "vip": True},
        opted_in_at={"usercreated.topics.newsletter-ab12|email": utc_now()},
        exists_in_apsis=True, last_outcome="synced")
"""


#: script lines (after DEMO_STATE) for a query of `members` members (argv[1]) of examples/demo.yaml (argv[2]: the
#: repo), all already tagged: `cfg`, a store `States` whose get_many decodes each member's real STATE document
#: (what the real store keeps per person, without boto3's per-batch garbage: a lower bound), and `Members`
QUERY_WORLD = r"""
import sys
from pathlib import Path
from efficy_sync.config import load_config_file
from efficy_sync.store.person_items import state_document
from efficy_sync.store.persons import PersonStateStore

members = int(sys.argv[1])
cfg = load_config_file(Path(sys.argv[2]) / "examples" / "demo.yaml")  # one query tag: vip (query 3618)

def item(key):
    return {"doc": state_document(demo_state(key)), "rev": 3}

class States:
    def get_many(self, integration_id, keys):
        return {int(k): PersonStateStore._decode(item(int(k))) for k in keys}

class Members:
    def previous(self, integration_id, query, tag): return set(range(1, members + 1))
    def put(self, *a, **k): pass
    def last_run(self, *a): return None
"""
