"""Masking of personal data before it reaches a log line, a report or a CLI screen.

Logs and `explain` output leave the account (support tickets, CloudWatch exports), so e-mail addresses, phone
numbers and names are masked there; what remains is enough to recognise a value, not to read it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_PII_FIELD = re.compile(
    r"MAIL|PHONE|MOBILE|GSM|FAX|TEL|NAME|ADDR|STREET|CITY|ZIP|POSTAL|BIRTH|IBAN|BANK|PASS|SSN|NATIONAL",
    re.IGNORECASE,
)
_EMAILISH = re.compile(r"[^@\s]+@[^@\s]+")
_PHONEISH = re.compile(r"^\+?[0-9 ().\-/]{6,}$")


def hash_key(key: str | int, *, salt: str = "") -> str:
    """A stable pseudonym for a profile key, so log lines about one person can be joined without naming them."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).hexdigest()
    return f"k-{digest[:12]}"


def mask_email(email: str | None) -> str:
    """'john.doe@Example.com' -> 'j***@example.com': the domain helps support, the mailbox stays private."""
    if not email:
        return ""
    local, at, domain = str(email).strip().rpartition("@")
    if not at:
        return mask_text(email)
    return f"{local[:1]}***@{domain.lower()}"


def mask_phone(phone: str | None) -> str:
    """'+32470000001' -> '+32*****01': country code and last two digits only; the length is not revealed."""
    if not phone:
        return ""
    text = str(phone).strip()
    if len(text) <= 5:
        return "*****"
    return f"{text[:3]}*****{text[-2:]}"


def mask_text(value: Any) -> str:
    """Any other personal value: first character only."""
    text = "" if value is None else str(value)
    if not text:
        return ""
    return f"{text[:1]}***"


def looks_like_pii(name: str | None) -> bool:
    """True when a field or attribute name suggests personal data (e-mail, phone, name, address, birth date...)."""
    return bool(name) and bool(_PII_FIELD.search(str(name)))


def mask_value(name: str | None, value: Any) -> Any:
    """Masks `value` when its field name or its shape says it is personal; other values pass through unchanged."""
    if value is None or value == "":
        return value
    text = str(value)
    if _EMAILISH.fullmatch(text):
        return mask_email(text)
    if not looks_like_pii(name):
        # free text may still quote an address
        return _EMAILISH.sub(lambda m: mask_email(m.group()), text) if "@" in text else value
    if name and re.search(r"PHONE|MOBILE|GSM|FAX|TEL", name, re.IGNORECASE) and _PHONEISH.match(text):
        return mask_phone(text)
    return mask_text(text)
