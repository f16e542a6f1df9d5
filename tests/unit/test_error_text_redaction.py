"""Error texts of APSIS and Efficy are stored (person state `error_detail`, run record `last_error`, Step Functions
cause) and printed by `explain`, not only logged: they must not carry the personal values the APIs echo back."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from efficy_sync.clients.apsis_transport import ApsisTransport
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import ApiError
from efficy_sync.pii import MAX_FREE_TEXT, redact_text

NATIONAL_PHONES = ["0470 12 34 56", "(02) 123 45 67", "0470/12.34.56", "0470-12-34-56"]


def answer(status: int, body: Any, content_type: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = content_type
    response.encoding = "utf-8"
    return response


def apsis_error(detail: Any, *, status: int = 400, title: str = "Bad Request") -> ApiError:
    transport = ApsisTransport("https://apsis.invalid", "client-id", "client-secret")
    problem = {"title": title, "status": status, "detail": detail}
    return transport._error_for(answer(status, problem, "application/problem+json"), "patch_attributes")


def efficy_client() -> EfficyClient:
    return EfficyClient("https://efficy.invalid/crm", "api-key")


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# ---- APSIS: the refused value in a problem+json detail --------------------------------------------------------
@pytest.mark.parametrize("phone", NATIONAL_PHONES)
def test_apsis_error_detail_masks_national_phone_numbers(phone: str) -> None:
    error = apsis_error(f"Invalid phone number {phone} for attribute com.apsis1.attributes.phone")
    assert error.detail is not None
    assert digits(phone)[-7:] not in digits(error.detail) and phone not in str(error)
    assert (
        error.detail
        == "APSIS patch_attributes: 400 Bad Request: Invalid phone number <phone> for attribute com.apsis1.attributes.phone"
    )


def test_apsis_error_detail_masks_addresses_without_a_dotted_domain() -> None:
    error = apsis_error("jane@localhost is not a deliverable address")
    assert error.detail == "APSIS patch_attributes: 400 Bad Request: <email> is not a deliverable address"


def test_apsis_error_detail_masks_quoted_values_but_not_the_attribute() -> None:
    error = apsis_error('The value "Jane Doe" is not valid for attribute "com.apsis1.attributes.firstname"')
    assert error.detail == (
        'APSIS patch_attributes: 400 Bad Request: The value "…" is not valid for attribute '
        '"com.apsis1.attributes.firstname"'
    )


def test_apsis_error_detail_that_is_an_object_keeps_its_keys_not_its_values() -> None:
    """The content of `detail` is unspecified (contracts/apsis-one.md §5): it may be an object of field errors."""
    error = apsis_error({"com.apsis1.attributes.lastname": ["Doe is too long"], "status": 400})
    assert error.detail is not None and "Doe" not in error.detail
    assert "'com.apsis1.attributes.lastname': ['…']" in error.detail and "'status': 400" in error.detail


# ---- Efficy: REST error.message and JSON-RPC errorstring ------------------------------------------------------
def test_efficy_rest_error_message_is_masked_but_status_and_code_stay() -> None:
    body = {
        "error": {"code": "INVALID_FIELD", "message": "EMAIL1 jane.doe@example.com of 'Jane Doe' (+32 470 12 34 56)"}
    }
    with pytest.raises(ApiError) as caught:
        efficy_client()._check_status(answer(400, body, "application/json"), "update_person")
    assert str(caught.value) == (
        "Efficy answered 400 to update_person: INVALID_FIELD: EMAIL1 j***@example.com of '…' (+32*****56)"
    )
    assert caught.value.status == 400


@pytest.mark.parametrize("phone", ["+32 470 12 34 56", *NATIONAL_PHONES])
def test_efficy_business_error_masks_phone_numbers(phone: str) -> None:
    error = efficy_client()._business_error("update_person", ("DUPLICATE_MOBILE", f"mobile {phone} used by 4711"))
    assert digits(phone)[-7:] not in digits(str(error))
    assert str(error).startswith("Efficy refused update_person: DUPLICATE_MOBILE: mobile ")
    assert str(error).endswith(" used by 4711") and error.code == "DUPLICATE_MOBILE"


def test_efficy_business_error_masks_quoted_names_and_undotted_addresses() -> None:
    error = efficy_client()._business_error("create_person", ("X-1", "contact 'Jane Doe' <jane@localhost> exists"))
    assert str(error) == "Efficy refused create_person: X-1: contact '…' <j***@localhost> exists"


# ---- what an operator needs survives ----------------------------------------------------------------------------
def test_status_codes_error_codes_ids_dates_and_discriminators_survive() -> None:
    text = "404 Not Found: attribute com.apsis1.attributes.email (id 123456) code FRMK-2612 at 2024-05-01T10:00:00Z"
    assert redact_text(text) == text
    assert redact_text(text, hint=False) == text


def test_quoted_names_of_things_survive_quoted_values_do_not() -> None:
    text = "{'errors': {'com.apsis1.attributes.email': ['Jane']}, 'field': 'K_CONTACT', 'attr': 'EMAIL1', 'id': '42'}"
    assert redact_text(text) == (
        "{'errors': {'com.apsis1.attributes.email': ['…']}, 'field': 'K_CONTACT', 'attr': 'EMAIL1', 'id': '42'}"
    )


def test_an_apostrophe_in_a_word_is_not_a_quote() -> None:
    assert redact_text("can't store 'O'Brien' in NAME") == "can't store '…' in NAME"
    assert redact_text("the customers' data") == "the customers' data"


def test_seven_digits_make_a_phone_number_six_do_not() -> None:
    assert redact_text("ids 123456 and 1234567", hint=False) == "ids 123456 and <phone>"


def test_masking_masked_text_changes_nothing() -> None:
    once = redact_text("'Jane' jane@x.io +32 470 12 34 56 in 'com.apsis1.attributes.phone'")
    assert once == "'…' j***@x.io +32*****56 in 'com.apsis1.attributes.phone'"
    assert redact_text(once) == once


# ---- long texts --------------------------------------------------------------------------------------------------
def test_a_long_text_is_cut_before_it_is_masked() -> None:
    leak = "jane@example.com " * 500_000 + "0470 12 34 56"
    out = redact_text(leak)
    assert len(out) <= MAX_FREE_TEXT + 1 and "jane" not in out and "0470" not in out


def test_a_phone_number_cut_at_the_limit_leaves_none_of_its_digits() -> None:
    prefix = "x" * (MAX_FREE_TEXT - 8) + " "
    out = redact_text(prefix + "0470 12 34 56")  # the cut falls after "0470 12"
    assert out == prefix.rstrip() + "…"


def test_a_value_whose_closing_quote_was_cut_off_is_still_masked() -> None:
    out = redact_text('value "' + "Jane Doe " * 500 + '" refused')
    assert out == 'value "…"'
