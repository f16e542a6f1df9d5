"""A JSON null where a sync condition tests a value says nothing (README, sync conditions): it passes no test,
`not_equals` included. `ROBINSON not_equals "1"` let a person whose flag came back null through, and they were
created in APSIS One; an empty text "" is a value and still passes. The same for a lookup object or a list."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import Desired, Skip, map_person

CFG = config_from_dict(
    {
        "integration_id": "nulls",
        "efficy": {"base_url": "https://crm.example.com/crm", "api_key_secret": "x/e", "webhook_secret_secret": "x/w"},
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        # examples/active-not-robinson.yaml
        "sync_conditions": [{"field": "OPENED", "equals": "1"}, {"field": "ROBINSON", "not_equals": "1"}],
    }
)


def person(robinson: Any) -> dict[str, Any]:
    return {"K_CONTACT": 7, "EMAIL1": "a@example.com", "OPENED": "1", "ROBINSON": robinson, "D_CHANGE": ""}


@pytest.mark.parametrize("robinson", [None, {"key": 1, "label": "Yes"}, ["1"]])
def test_a_flag_that_says_nothing_creates_nobody(robinson: Any) -> None:
    result = map_person(CFG, person(robinson))
    assert isinstance(result, Skip), f"ROBINSON {robinson!r} let the person through"
    assert result.unreadable  # left as it is in APSIS One: no removal on it either


@pytest.mark.parametrize("robinson", ["0", ""])
def test_a_flag_that_says_no_lets_the_person_through(robinson: str) -> None:
    assert isinstance(map_person(CFG, person(robinson)), Desired)
