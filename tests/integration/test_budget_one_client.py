"""Two integrations on one APSIS One account (the same API client id, each with its own credentials secret, as
`efficy-sync/<integration>/apsis` names suggest) got two budgets, because budget.account_key hashed the secret's
*name*, while the token store (apsis_tokens.py) already knew them for one API client: together their workers
sent up to twice the account's limit. The budget is named by the client id now.

The production wiring (budget.paced, as apply_changes / write_back / the full-sync pages use it), a real
ApsisClient over HTTP to the rate-limited APSIS simulator, the budget counters in moto's DynamoDB.
"""

from __future__ import annotations

import pytest
from efficy_sync import budget
from efficy_sync.budget import paced
from efficy_sync.config import config_from_dict

from tests.integration.test_apsis_budget import RATE, client, flood, sim, table  # noqa: F401  (fixtures)
from tests.integration.test_diff_calls import RAW


def config(integration_id: str):
    apsis = {**RAW["apsis"], "credentials_secret": f"efficy-sync/{integration_id}/apsis"}
    return config_from_dict({**RAW, "integration_id": integration_id, "apsis": apsis})


def test_two_integrations_of_one_api_client_share_the_account_budget(
    table: str,
    sim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", str(RATE))  # the account's real rate, as the runbook says
    monkeypatch.setattr(budget, "_budgets", {})
    eu, de = config("acme-eu"), config("acme-de")  # one Efficy feeding two sections of one account
    apsis_eu, apsis_de = client(sim), client(sim)  # both secrets hold the same client id ("budget")
    apsis_eu.list_sections()
    apsis_de.list_sections()
    # each integration's workers, each worker a Lambda of its own: they share nothing but the table
    workers = [paced(eu, apsis_eu, table), paced(de, apsis_de, table)]
    errors = flood(workers, 110, threads=8)

    rate = sim.rate()
    assert errors == [] and rate["refused"] == 0 and rate["max_per_second"] <= 0.9 * RATE, (
        f"errors: {len(errors)} ({errors[:1]}); 429s: {rate['refused']}; "
        f"requests per second: {sorted(rate['per_second'].values(), reverse=True)}; budget cap {0.9 * RATE:g}/s"
    )
