"""The scheduled drift check (ReconcileFunction) fits its Lambda's memory on a realistic APSIS account.

Reconciler.run (reconcile_run.py) read the section from one APSIS profile export, which holds every profile of the
account, even for the schedule's sample of 500: export_section -> download_export held the answer's bytes
(response.content), their decoded text, the parsed JSON and an ExportedProfile per profile at once (~4 KB per
exported profile). On an export of 300,000 profiles (204 MB) that peaked at 1,215 MB RSS, over the function's
1,024 MB: the Lambda ran out of memory on every run, its per-integration `except` never ran, and no Drift metric
was published for any integration. The download is now read as it arrives (clients/json_stream.py) and only the
profiles a run needs are held, in a compact form (apsis_export.ExportedProfiles).

This runs the real ApsisClient and export_section in a fresh Python process against a local HTTP server that
sends an export of 300,000 profiles in the shape the simulator and the README give (demo.yaml's attributes, tags
and topics), all of our keyspace and all kept (the worst case: a full `reconcile --all`), and compares the peak RSS
with ReconcileFunction's MemorySize. The bound is half of it: the rest of the run (Efficy's pages, the states,
the AWS clients) needs room too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.lambda_memory import HWM, memory_of

ROOT = Path(__file__).resolve().parents[2]
SMALL, LARGE = 20_000, 80_000  # measured; an account of PROFILES is projected from their growth
PROFILES = 300_000
KEYSPACE = "com.apsis1.keyspaces.crm-id"

SCRIPT = (
    HWM
    + r"""
import http.server, json, os, shutil, sys, threading
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.apsis_export import export_section


EXPORT, KEYSPACE = sys.argv[1], sys.argv[2]


class Apsis(http.server.BaseHTTPRequestHandler):  # a token, then the ready export, sent as a file is sent
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _headers(self, length):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "t", "expires_in": 3600}).encode()
        self._headers(len(body))
        self.wfile.write(body)

    def do_GET(self):
        self._headers(os.path.getsize(EXPORT))
        with open(EXPORT, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Apsis)
threading.Thread(target=server.serve_forever, daemon=True).start()
client = ApsisClient(f"http://127.0.0.1:{server.server_port}", "id", "secret", section="s", keyspace=KEYSPACE)
start = hwm()
poll_url, profiles = export_section(client, attributes=[], tags=[], topics=[], poll_url="/audience/profiles/exports/x")
peak = hwm()
last = profiles[str(len(profiles))]
print(json.dumps({
    "profiles": len(profiles), "bytes": os.path.getsize(EXPORT), "start_mb": start / 1024, "peak_mb": peak / 1024,
    "last": {"attributes": last.attributes, "tags": sorted(last.tags), "consents": sorted(map(list, last.consents.items()))},
}))
"""
)


def attributes(key: int) -> dict[str, str]:
    return {
        "com.apsis1.attributes.email": f"person{key}@example.com",
        "com.apsis1.attributes.crmid": str(key),
        "com.apsis1.attributes.firstname": "Jane",
        "com.apsis1.attributes.lastname": f"Doe{key}",
        "com.apsis1.attributes.mobile": "+32470123456",
        "usercreated.attributes.language": "fr",
    }


def row(key: int) -> str:
    topics = ("usercreated.topics.newsletter-ab12", "usercreated.topics.events-ef56")
    return json.dumps(
        {
            "keys": {KEYSPACE: str(key)},
            "attributes": attributes(key),
            "tags": ["newsletter-readers", "vip"],
            "topics": [
                {
                    "topic_discriminator": topic,
                    "channel_discriminator": "com.apsis1.channels.email",
                    "consent_type": "opt-in",
                }
                for topic in topics
            ],
        }
    )


def measure(tmp_path: Path, profiles: int) -> subprocess.Popen:
    export = tmp_path / f"export-{profiles}.json"
    with export.open("w") as out:
        out.write('{"profiles": [')
        out.write(",".join(row(k) for k in range(1, profiles + 1)))
        out.write(f'], "total": {profiles}}}')
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(export), KEYSPACE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_scheduled_drift_check_reads_a_300k_profile_export_within_its_lambda_memory(tmp_path: Path) -> None:
    """Exports of 20,000 and 80,000 profiles are read (at once, each in its process); an account of 300,000 is
    projected from the growth of the peak (the whole 204 MB export took most of ten seconds to write and read)."""
    running = {n: measure(tmp_path, n) for n in (SMALL, LARGE)}
    measured = {}
    for n, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        measured[n] = json.loads(stdout.strip().splitlines()[-1])
        assert measured[n]["profiles"] == n
    assert measured[LARGE]["last"] == {
        "attributes": attributes(LARGE),
        "tags": ["newsletter-readers", "vip"],
        "consents": [
            [["usercreated.topics.events-ef56", "email"], "opt-in"],
            [["usercreated.topics.newsletter-ab12", "email"], "opt-in"],
        ],
    }
    small, large = measured[SMALL]["peak_mb"], measured[LARGE]["peak_mb"]
    projected = large + (large - small) * (PROFILES - LARGE) / (LARGE - SMALL)
    limit = memory_of("ReconcileFunction")
    assert projected <= limit / 2, (
        f"reading a {PROFILES}-profile export would peak at about {projected:.0f} MB RSS (measured {small:.0f} MB at "
        f"{SMALL}, {large:.0f} MB at {LARGE}) > half of ReconcileFunction's MemorySize {limit} MB"
    )
