"""The drift check reads the state table's keys within its Lambda's memory, for the integration sizes the README
supports (a 1,000,000-person CRM).

Reconciler.run (reconcile_run.py) called `states.scan(integration_id)` in two places, whatever the scope (the
scheduled check's sample of 500 too): where APSIS One refused the profile export (403/404: profiles read one
by one from the keys the state table knows) and where an export held no profile of ours (the empty-export
check counted the profiles known to exist). PersonStateStore.scan returns every stored state of the integration
decoded at once (~4.6 KB of PersonState each): 300,000 persons peaked at ~1.4 GB and 1,000,000 at ~4.7 GB,
where ReconcileFunction has 1,024 MB, so the Lambda ran out of memory on every scheduled run, its
per-integration `except` never ran and no Drift metric was published for any integration. Both only need the
keys of the persons whose state says they exist in APSIS One: PersonStateStore.keys_in_apsis reads them page
by page, projected to the key and the document, and keeps one int per person.

Each measure runs the real Reconciler and PersonStateStore in a fresh Python process over an integration of
SMALL or LARGE stored states, with a DynamoDB client that answers the Scan in 1 MB pages of real STATE items
(person_items.state_item) and honours its ProjectionExpression, the export refused (403) or answering nothing of
ours, and compares the growth of the peak RSS with the number of stored persons against a bound per person,
and the peak it implies for 1,000,000 persons with ReconcileFunction's MemorySize in template.yaml."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.lambda_memory import DEMO_STATE, HWM, memory_of
from tests.support import ROOT

#: one worker for the module: its module-scoped fixture is costly, and `--dist loadgroup` spread its tests
pytestmark = pytest.mark.xdist_group("reconcile_states_memory")

SCRIPT = (
    HWM
    + DEMO_STATE
    + r"""
import sys, json
from pathlib import Path
import efficy_sync.reconcile_run as reconcile_run
import efficy_sync.store.dynamo as dynamo
from efficy_sync.clients.errors import ApsisUnavailable, AuthError
from efficy_sync.config import load_config_file
from efficy_sync.reconcile_run import Reconciler, Scope
from efficy_sync.store.person_items import state_item
from efficy_sync.store.persons import PersonStateStore

persons, export = int(sys.argv[1]), sys.argv[2]
cfg = load_config_file(Path(sys.argv[3]) / "examples" / "demo.yaml")
MARK = 987654321  # the template's key, replaced by each person's

state = demo_state(MARK, cfg.integration_id)
TEMPLATE = json.dumps(state_item(state))
PAGE = max(1, 1_000_000 // len(TEMPLATE))  # a Scan answers at most 1 MB a page

def item(key):
    return json.loads(TEMPLATE.replace(str(MARK), str(key)))

class DynamoDB:  # the state table: `persons` STATE items (the filter's answer), a page of 1 MB at a time
    def scan(self, **params):
        after = int(params.get("ExclusiveStartKey", {}).get("pk", {}).get("S", "#0").rsplit("#", 1)[1])
        keys = range(after + 1, min(after + PAGE, persons) + 1)
        wanted = [n.strip() for n in params.get("ProjectionExpression", "").split(",") if n.strip()]
        items = [{k: v for k, v in item(k).items() if not wanted or k in wanted} for k in keys]
        more = {"LastEvaluatedKey": {"pk": {"S": f"PERSON#{cfg.integration_id}#{keys[-1]}"}}} if keys[-1] < persons else {}
        return {"Items": items, **more}

    def batch_get_item(self, RequestItems):  # the sample's persons: none stored (all `missing`: no matter)
        return {"Responses": {}}

class Efficy:
    def run_query(self, query): return []
    def list_persons_page(self, page, size, fields, include_profiles=False):
        return [{"K_CONTACT": k} for k in range(page * size + 1, (page + 1) * size + 1)] if page < 2 else []
    def get_persons(self, keys, fields): return {}

def refused(*args, **kwargs):
    raise AuthError("APSIS export: 403", status=403)

dynamo.client = lambda service: DynamoDB()
reconcile_run.export_profiles = refused if export == "refused" else lambda *a, **k: ("", {})
reconcile_run.probe_profile = lambda apsis, key, topics: None
base = hwm()
try:
    checked = Reconciler(cfg, Efficy(), None, PersonStateStore("state")).run(Scope(sample=500)).report.persons_checked
except ApsisUnavailable as exc:
    checked = str(exc)
peak = hwm()
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "checked": checked}))
"""
)

SMALL, LARGE = 20_000, 80_000  # measured; an integration of 1,000,000 persons is projected from their growth
CRM = 1_000_000  # the persons of a large integration (the README's import-mode arithmetic: 1,000,000 persons)
#: the peak's growth per 100,000 more stored persons: their keys fit in it, their states (~460 MB) did not
GROWTH_PER_100K_MB = 25
EXPORTS = ("refused", "empty")


@pytest.fixture(scope="module")
def peaks() -> dict[tuple[str, int], dict]:
    """Each export's answer at both sizes, each in its own process, all at once."""
    running = {
        (export, n): subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(n), export, str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for export in EXPORTS
        for n in (SMALL, LARGE)
    }
    out = {}
    for (export, n), process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        out[export, n] = measured = json.loads(stdout.strip().splitlines()[-1])
        if export == "refused":  # the sample, read one by one from the keys the state table knows
            assert measured["checked"] == 500
        else:  # refused as untrusted, with the count of the profiles the states say exist
            assert f"holds no profile while {n} are known to exist" in measured["checked"]
    return out


@pytest.mark.parametrize("export", EXPORTS)
def test_the_drift_check_s_memory_grows_by_keys_not_by_states_with_the_stored_persons(
    peaks: dict[tuple[str, int], dict], export: str
) -> None:
    growth = (peaks[export, LARGE]["peak_mb"] - peaks[export, SMALL]["peak_mb"]) * 100_000 / (LARGE - SMALL)
    assert growth <= GROWTH_PER_100K_MB, (
        f"with the export {export}, the drift check's peak RSS grows by {growth:.0f} MB per 100,000 stored persons "
        f"(> {GROWTH_PER_100K_MB} MB)"
    )


@pytest.mark.parametrize("export", EXPORTS)
def test_the_scheduled_drift_check_of_a_million_persons_fits_its_lambda_memory(
    peaks: dict[tuple[str, int], dict], export: str
) -> None:
    small, large, limit = peaks[export, SMALL], peaks[export, LARGE], memory_of("ReconcileFunction")
    at_crm = large["peak_mb"] + max(0.0, large["peak_mb"] - small["peak_mb"]) * (CRM - LARGE) / (LARGE - SMALL)
    assert at_crm <= limit, (
        f"with the export {export}, the drift check peaks at {large['peak_mb']:.0f} MB RSS over {LARGE} stored "
        f"persons, so ~{at_crm:.0f} MB over {CRM} (Python + package: {large['base_mb']:.0f} MB) > "
        f"ReconcileFunction MemorySize {limit} MB"
    )
