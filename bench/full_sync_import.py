"""Import-mode full-sync figures: first load and unchanged re-sync against the bare import ceiling of the same
run, APSIS / Efficy / DynamoDB calls per 1,000 persons, and the 1,000,000-person estimate for AWS.

The bare import ceiling: the simulators paged and imported with no product logic in between. Efficy read in
pages of 500, five at a time (as the state machine's pages do), the records gathered into files of
`full_sync.import_rows` rows (key + first name), each file one import, three in flight (APSIS's limit), polled
like the product polls. It does what import mode must do at the least: read every person once and send every
row once; it reads no state, maps nothing, stores nothing.

The APSIS simulator processes an import in 0.05 s, so that ceiling is mostly Efficy paging. APSIS's real
processing time (undocumented, the limit that binds on AWS) is what both sides would wait for, once per wave of
three imports: `processing_threshold` says from which processing time the first load reaches 0.25 of the
ceiling, from the run's own figures, and `with_processing_time` measures both sides again with the simulator
taking that long (`make bench`: 5 s at 10,000 persons), as a check of that arithmetic.

Run on its own: `python -m bench.full_sync_import 10000` (JSON on stdout).
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.full_sync import (
    ACCOUNT_RATE,
    FULL_SYNC_SHARE,
    IMPORTS_PER_MINUTE,
    PAGE_CONCURRENCY,
    _apsis_person_calls,
    _calls,
    _clear_calls,
    _clients,
    _config,
    _efficy_calls,
    seeded_stack,
)

IMPORTS_IN_FLIGHT = 3  # APSIS One, per account (documented)
#: ASSUMED: APSIS's processing time of one import of up to 20,000 rows (not documented; the old web wizard
#: said profiles are usable "after at least 10 minutes", which we read as visibility, not processing)
IMPORT_PROCESSING_MINUTES = 1.0
#: ASSUMED: one Efficy connector page of 500 persons on AWS (measured on customer tenants: 0.3-1 s)
EFFICY_PAGE_SECONDS = 1.0
#: ASSUMED: one DynamoDB call from Lambda in the same region ("single-digit milliseconds", AWS), one after another
DYNAMODB_CALL_SECONDS = 0.005

_DDB: dict[str, int] = {"calls": 0, "person_state_writes": 0}
_COUNTED: set[int] = set()
#: the handlers' threads call at once: `+=` on a shared dict is not atomic, and lost counts showed as persons
#: "not written" (9,977 of 10,000) in a run that wrote them all
_COUNT_LOCK = threading.Lock()


def _count_dynamodb() -> None:
    """Counts every DynamoDB call the in-process handlers make, and the person-state items among the writes
    (PutItem, BatchWriteItem or TransactWriteItems of a PERSON# / STATE item), on efficy_sync.aws's shared client."""
    from efficy_sync.aws import client

    ddb = client("dynamodb")
    if id(ddb) in _COUNTED:
        return
    _COUNTED.add(id(ddb))

    def is_state(item: dict[str, Any]) -> bool:
        return item.get("pk", {}).get("S", "").startswith("PERSON#") and item.get("sk", {}).get("S") == "STATE"

    def count(params: dict[str, Any], event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        states = 0
        if operation == "PutItem" and is_state(params.get("Item", {})):
            states = 1
        elif operation == "BatchWriteItem":
            for writes in params.get("RequestItems", {}).values():
                states += sum(is_state(w.get("PutRequest", {}).get("Item", {})) for w in writes)
        elif operation == "TransactWriteItems":
            states += sum(is_state(w.get("Put", {}).get("Item", {})) for w in params.get("TransactItems", []))
        with _COUNT_LOCK:
            _DDB["calls"] += 1
            _DDB["person_state_writes"] += states

    ddb.meta.events.register("before-parameter-build.dynamodb", count)


def ceiling(stack: Any, n: int, rows: int, page_size: int = 500) -> dict[str, Any]:
    """The bare import ceiling (module docstring)."""
    from efficy_sync.fullsync.import_writer import ImportWriter

    efficy, apsis = _clients(stack)
    requests.post(f"{stack.apsis.url}/_sim/reset", timeout=30)
    spec = {
        "keyspace_mapping": {"keyspace_discriminator": "com.apsis1.keyspaces.crm-id", "field_selector": "k"},
        "attribute_mappings": [{"field_selector": "f", "attribute_discriminator": "com.apsis1.attributes.firstname"}],
    }
    requests.delete(f"{stack.apsis.url}/_sim/calls", timeout=30)
    started = time.perf_counter()
    with ThreadPoolExecutor(PAGE_CONCURRENCY) as pool:
        pages = list(
            pool.map(
                lambda number: efficy.list_persons_page(number, page_size, ["K_CONTACT", "FIRSTNAME"]),
                range(-(-n // page_size)),
            )
        )
    records = [r for page in pages for r in page]
    files = [records[i : i + rows] for i in range(0, len(records), rows)]

    def send(file: list[dict[str, Any]]) -> None:
        body = "\n".join(f"{r['K_CONTACT']},{r.get('FIRSTNAME', '')}" for r in file)
        # the product's create / upload / adaptive polling, nothing else of the writer
        ImportWriter(None, apsis, None, poll_interval=0.2, timeout=600.0)._run(spec, f"k,f\n{body}\n".encode())

    with ThreadPoolExecutor(IMPORTS_IN_FLIGHT) as pool:
        list(pool.map(send, files))
    elapsed = time.perf_counter() - started
    calls = _apsis_person_calls(_calls(stack.apsis.url))
    requests.post(f"{stack.apsis.url}/_sim/reset", timeout=30)
    return {
        "seconds": round(elapsed, 1),
        "persons_per_second": round(n / elapsed, 1),
        "files": len(files),
        "apsis_calls": calls,
    }


def _run_to_end(stack: Any, integration_id: str, timeout: float = 3600) -> dict[str, Any]:
    """Start through Step Functions, as the CLI does, and wait by asking Step Functions (not the run's
    DynamoDB item: the wait must not add DynamoDB calls to the ones counted); then read the run once."""
    from efficy_sync.aws import client
    from efficy_sync.fullsync.runs import RunStore
    from efficy_sync.settings import settings

    sfn = client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.ready["stack"]["state_machine_arn"],
        name=f"{integration_id}-bench-{time.time_ns()}",
        input=json.dumps({"integration_id": integration_id, "dry_run": False}),
    )["executionArn"]
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while (status := sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench full sync did not end within {timeout}s")
        time.sleep(0.5)  # each look is a botocore call in the process the handlers run in: not too often
    seconds = time.perf_counter() - started
    before = _DDB["calls"]
    run = RunStore(settings().state_table).latest(integration_id)
    _DDB["calls"] = before  # reading the report is the bench's, not the run's
    if status != "SUCCEEDED" or run is None or run.status != "succeeded":
        raise RuntimeError(f"bench full sync ended {status}: {run.error if run else 'no run'}")
    return {"seconds": seconds, "report": run.report}


def measured(stack: Any, integration_id: str, n: int) -> dict[str, Any]:
    """One full sync through the real state machine, with its calls per 1,000 persons."""
    _clear_calls(stack.efficy.url, stack.apsis.url)
    before = dict(_DDB)
    result = _run_to_end(stack, integration_id)
    apsis, efficy = _calls(stack.apsis.url), _calls(stack.efficy.url)
    report = result["report"]
    imports = apsis.get("POST /v2/audience/sections/{section}/imports", 0)
    tag_calls = sum(v for k, v in apsis.items() if k.startswith("PATCH") and "tags" in k)
    return {
        "seconds": round(result["seconds"], 1),
        "persons_per_second": round(n / result["seconds"], 1),
        "created": report["persons"]["created"],
        "skipped": report["persons"]["skipped"],
        "failed": report["persons"]["failed"],
        "imports": imports,
        "import_rows": report.get("imports", {}).get("rows", 0),
        "tag_calls": tag_calls,
        "apsis_calls": _apsis_person_calls(apsis),
        "per_person_calls": sum(
            v for k, v in apsis.items() if "/profiles" in k and "/imports" not in k and "_upload" not in k
        ),
        "apsis_calls_per_1000": round(_apsis_person_calls(apsis) * 1000 / n, 1),
        "efficy_calls_per_1000": round(_efficy_calls(efficy) * 1000 / n, 1),
        "dynamodb_calls_per_1000": round((_DDB["calls"] - before["calls"]) * 1000 / n, 1),
        "person_state_writes": _DDB["person_state_writes"] - before["person_state_writes"],
        "apsis_routes": apsis,
    }


def estimate(first: dict[str, Any], n: int, rows: int, persons: int = 1_000_000) -> dict[str, Any]:
    """1,000,000 first-load persons on AWS from this run's calls per person and the documented limits.

    - imports: this run's imports per file (kinds: attributes + opt-ins, opt-outs, ...) x files of `rows`;
      request limit: imports / 10 a minute; in-flight limit: imports x IMPORT_PROCESSING_MINUTES / 3;
    - pages: one Efficy page read per 500 persons at EFFICY_PAGE_SECONDS, 5 pages at once, plus this run's
      DynamoDB calls per person at DYNAMODB_CALL_SECONDS (this run's Efficy calls per 1,000 also hold the
      record-count probes, about 2 log2 N calls a run, which do not grow with N);
    - the Imports step reads each queued Efficy page again, 3 files at once, while the imports run;
    - per-person APSIS calls (rows an import cannot carry) at 90 requests/s.
    The pages run first, then the Imports step."""
    kinds = first["imports"] / max(1, math.ceil(first["created"] / rows)) if first["imports"] else 0
    files = math.ceil(persons / rows)
    imports = math.ceil(files * kinds)
    efficy_pages = math.ceil(persons / 500)
    request_minutes = imports / IMPORTS_PER_MINUTE
    in_flight_minutes = imports * IMPORT_PROCESSING_MINUTES / IMPORTS_IN_FLIGHT
    reread_minutes = efficy_pages * EFFICY_PAGE_SECONDS / IMPORTS_IN_FLIGHT / 60
    ddb_calls = first["dynamodb_calls_per_1000"] * persons / 1000
    pages_minutes = (efficy_pages * EFFICY_PAGE_SECONDS + ddb_calls * DYNAMODB_CALL_SECONDS) / PAGE_CONCURRENCY / 60
    per_person_minutes = first["per_person_calls"] * persons / n / (ACCOUNT_RATE * FULL_SYNC_SHARE) / 60
    limits = {
        "import requests (10 a minute)": request_minutes,
        f"imports in flight (3, {IMPORT_PROCESSING_MINUTES:g} min each, assumed)": in_flight_minutes,
        "Efficy re-reads of the Imports step": reread_minutes,
    }
    binding = max(limits, key=lambda k: limits[k])
    total = pages_minutes + max(limits.values()) + per_person_minutes
    # the processing time per import at which the in-flight limit alone brings the total to 30 minutes
    spare = 30 - pages_minutes - per_person_minutes
    break_even = spare * IMPORTS_IN_FLIGHT / imports if imports and spare > 0 else None
    return {
        "persons": persons,
        "import_rows": rows,
        "files": files,
        "imports_per_file": round(kinds, 2),
        "imports": imports,
        "pages_minutes": round(pages_minutes, 1),
        "request_limit_minutes": round(request_minutes, 1),
        "in_flight_limit_minutes": round(in_flight_minutes, 1),
        "reread_minutes": round(reread_minutes, 1),
        "imports_minutes": round(max(limits.values()), 1),
        "per_person_minutes": round(per_person_minutes, 1),
        "binding_limit": binding,
        "minutes": round(total, 1),
        "passes_30_min_above_processing_minutes": round(break_even, 2) if break_even is not None else None,
        "assumptions": {
            "import_processing_minutes": IMPORT_PROCESSING_MINUTES,
            "efficy_page_seconds": EFFICY_PAGE_SECONDS,
            "dynamodb_call_seconds": DYNAMODB_CALL_SECONDS,
        },
    }


def processing_threshold(ceiling_run: dict[str, Any], first: dict[str, Any], share: float = 0.25) -> float | None:
    """The APSIS processing time per import (seconds, the same on both sides) from which the first load would
    reach `share` of the ceiling, from this run's figures: each side waits that time once per wave of three
    imports, on top of what it took here (where the simulator takes 0.05 s). Solves
    (ceiling + waves_c x T) / (first + waves_p x T) = share; None when no T reaches it."""
    waves_c = math.ceil(ceiling_run["files"] / IMPORTS_IN_FLIGHT)
    waves_p = math.ceil(first["imports"] / IMPORTS_IN_FLIGHT)
    room = waves_c - share * waves_p
    if room <= 0:
        return None
    return round(max(0.0, (share * first["seconds"] - ceiling_run["seconds"]) / room), 1)


def predicted_share(ceiling_run: dict[str, Any], first: dict[str, Any], seconds: float) -> float:
    """`processing_threshold`'s arithmetic the other way round: the ratio it predicts for `seconds` per import."""
    waves_c = math.ceil(ceiling_run["files"] / IMPORTS_IN_FLIGHT)
    waves_p = math.ceil(first["imports"] / IMPORTS_IN_FLIGHT)
    return round((ceiling_run["seconds"] + waves_c * seconds) / (first["seconds"] + waves_p * seconds), 2)


def with_processing_time(stack: Any, n: int, rows: int, seconds: float) -> dict[str, Any]:
    """Ceiling and first load again with the APSIS simulator taking `seconds` to process each import (both
    sides alike; the simulator's default is 0.05 s): a measured check of `processing_threshold`'s arithmetic,
    and what the ratio looks like once the limit that binds on AWS is in the picture at all."""
    default = stack.apsis.import_delay_ms
    stack.apsis.import_delay_ms = int(seconds * 1000)
    try:
        requests.post(f"{stack.apsis.url}/_sim/reset", timeout=60)
        ceiling_run = ceiling(stack, n, rows)
        requests.post(f"{stack.apsis.url}/_sim/reset", timeout=60)
        _config(stack, "bench-import-processing", "import")
        first = measured(stack, "bench-import-processing", n)
    finally:
        stack.apsis.import_delay_ms = default
    return {
        "processing_seconds": seconds,
        "ceiling_seconds": ceiling_run["seconds"],
        "first_load_seconds": first["seconds"],
        "share_of_ceiling": round(ceiling_run["seconds"] / first["seconds"], 2),
    }


def measure(stack: Any, n: int, *, processing_check: float | None = None) -> dict[str, Any]:
    """Ceiling, first load and unchanged re-sync in import mode on a started local stack whose Efficy
    simulator holds the persons (called by bench.full_sync.run and by `run` below); with `processing_check`
    (seconds), also `with_processing_time`."""
    from efficy_sync.config import FullSyncSettings

    rows = FullSyncSettings().import_rows
    _count_dynamodb()
    out: dict[str, Any] = {"persons": n, "import_rows": rows}
    out["ceiling"] = ceiling(stack, n, rows)
    requests.post(f"{stack.apsis.url}/_sim/reset", timeout=60)
    _config(stack, "bench-import", "import")
    out["first_load"] = first = measured(stack, "bench-import", n)
    first["share_of_ceiling"] = round(first["persons_per_second"] / out["ceiling"]["persons_per_second"], 2)
    first["processing_threshold_seconds"] = processing_threshold(out["ceiling"], first)
    out["estimate_1m_on_aws"] = estimate(first, n, rows)
    print(json.dumps({k: v for k, v in out.items() if k != "first_load"} | {"first_load": first}), flush=True)
    try:
        out["unchanged"] = measured(stack, "bench-import", n)
    except (RuntimeError, TimeoutError) as exc:
        # at 100,000 persons moto's TransactWriteItems deep-copies the whole state table on every call (see
        # local/moto_threads.py): Begin can outlast its 60 s read timeout on a loaded machine. Keep the first load.
        out["unchanged"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if processing_check is not None:
        out["processing_check"] = check = with_processing_time(stack, n, rows, processing_check)
        check["predicted_share"] = predicted_share(out["ceiling"], first, processing_check)
    return out


def run(n: int = 10_000) -> dict[str, Any]:
    with seeded_stack(n) as stack:
        return measure(stack, n)


def render(r: dict[str, Any]) -> str:
    """The import-mode section of BENCHMARKS.md."""
    first, unchanged, ceil, est = r["first_load"], r["unchanged"], r["ceiling"], r["estimate_1m_on_aws"]

    def row(label: str, m: dict[str, Any], share: str) -> str:
        if "error" in m:
            return f"| {label} | not measured: {m['error']} |" + " |" * 10
        return (
            f"| {label} | {m['seconds']:,} | {m['persons_per_second']:,} | {share} | {m['apsis_calls_per_1000']:,} | "
            f"{m['imports']} | {m['tag_calls']} | {m['efficy_calls_per_1000']:,} | {m['dynamodb_calls_per_1000']:,} | "
            f"{m['person_state_writes']:,} | {m['failed']} |"
        )

    return "\n".join(
        [
            f"## Full sync in import mode, {r['persons']:,} persons",
            "",
            f"Files of `full_sync.import_rows` = {r['import_rows']:,} rows, gathered across pages by the Imports step.",
            "The bare import ceiling of the same run: Efficy read in pages of 500, five at a time, the records sent "
            f"as files of {r['import_rows']:,} rows, one import each, three in flight, no logic in between "
            f"({ceil['files']} file(s), {ceil['persons_per_second']:,} persons/s).",
            "",
            "| run | seconds | persons/s | vs ceiling | APSIS calls / 1,000 | imports | tag calls | Efficy calls / 1,000 "
            "| DynamoDB calls / 1,000 | person-state writes | failed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            row("first load", first, f"{first['share_of_ceiling']:.2f}"),
            row("unchanged re-sync", unchanged, "-"),
            "",
            f"Estimate for {est['persons']:,} persons on AWS (first load): {est['minutes']} min = pages "
            f"{est['pages_minutes']} min + Imports step {est['imports_minutes']} min ({est['imports']} imports: "
            f"{est['files']} files x {est['imports_per_file']} per file; request limit {est['request_limit_minutes']} "
            f"min, in-flight limit {est['in_flight_limit_minutes']} min, Efficy re-reads {est['reread_minutes']} min, "
            "overlapping) + per-person "
            f"calls {est['per_person_minutes']} min. Binding limit: {est['binding_limit']}. Assumed: an import is "
            f"processed in {est['assumptions']['import_processing_minutes']:g} min (APSIS does not document it), an "
            f"Efficy page of 500 in {est['assumptions']['efficy_page_seconds']:g} s, a DynamoDB call in "
            f"{est['assumptions']['dynamodb_call_seconds'] * 1000:g} ms. Arithmetic: pages = "
            f"({est['files'] * est['import_rows'] // 500:,} Efficy pages x {est['assumptions']['efficy_page_seconds']:g} s"
            f" + DynamoDB calls x {est['assumptions']['dynamodb_call_seconds'] * 1000:g} ms) / 5 pages at once; "
            f"in-flight limit = {est['imports']} imports x {est['assumptions']['import_processing_minutes']:g} min / 3;"
            f" request limit = {est['imports']} / 10 a minute. The estimate passes 30 min if APSIS takes more than "
            f"{est.get('passes_30_min_above_processing_minutes')} min to process one import of "
            f"{est['import_rows']:,} rows.",
        ]
    )


if __name__ == "__main__":
    import sys

    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
    print(json.dumps(result, indent=2))
    print(render(result))
