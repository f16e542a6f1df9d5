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

#: free text from an API (an error message) is cut to this many characters before it is masked: it is stored
#: (person state, run record, Step Functions cause) and the patterns below need not run over a whole HTML page
MAX_FREE_TEXT = 1000
#: what a masked quoted value becomes, inside its own quotes
MASKED = "\u2026"

_DELIMS = r"""\s"'<>()\[\]{},;:=/?&#"""
# An address, whatever its domain (jane@localhost, jane@[10.0.0.1]) or its '@' (%40 in a URL), starting at a
# token boundary so a long run without '@' is scanned once.
_EMAIL_IN_TEXT = re.compile(rf"(?<![^{_DELIMS}])[^{_DELIMS}@]+(?:@|%40)[^{_DELIMS}]+")
# A date stays readable: it is matched first so its digits do not count towards a phone number.
_DATE = (
    r"(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|1[0-2])[./-](?:19|20)\d\d"
)
# A phone number: digit groups separated by one space, dot, dash, slash or parentheses, with an optional leading
# '+' ("0470 12 34 56", "+32 (0)470 12 34 56", "(02) 123 45 67"); not a piece of a longer token (a UUID, a word).
_PHONE = (
    r"(?:\+\s?)?(?:\(\s?)?\d+"
    r"(?:(?:[ \u00a0./-]|\s?\(\s?|\s?\)\s?)\d+)*"
)
_NUMBER_IN_TEXT = re.compile(
    rf"(?<![\w.+/@-])(?:(?P<date>{_DATE})(?![\d]|[./-]\d)|(?P<phone>{_PHONE})(?![\w@]|[./-]\w))"
)
#: fewer digits than this is a status, a code, an attribute id or a count, not a phone number
PHONE_MIN_DIGITS = 7
# A quoted value: "..." (with \" escapes), '...' (an apostrophe inside a word, as in O'Brien, is not its end)
# or typographic quotes. A quote left open runs to the end of the text.
_QUOTED = re.compile(
    r'"(?P<d>(?:\\[\s\S]?|[^"\\])*)(?:"|\Z)'
    r"|(?<!\w)'(?P<s>(?:\\[\s\S]?|[^'\\]|'(?=\w))*)(?:'|\Z)"
    "|\u201c(?P<c>[^\u201d]*)(?:\u201d|\\Z)"
    "|\u2018(?P<t>[^\u2019]*)(?:\u2019|\\Z)"
)
# Quoted text that names a thing rather than holding a person's value: empty or already masked, a short number
# (status, attribute id), a discriminator (com.apsis1.attributes.email), a field name (K_CONTACT, crm_id, EMAIL1).
_NAME_QUOTED = re.compile(
    r"(?:\u2026)?|\d{1,6}|[A-Za-z][\w-]*(?:\.[\w-]+){2,}|[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+|[A-Z]+\d+"
)
_OBJECT_KEY = re.compile(r"[A-Za-z_$@][\w.$@-]{0,63}")


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


def redact_text(text: str | None, *, hint: bool = True, limit: int = MAX_FREE_TEXT) -> str:
    """Free text from another system (an API's error message) with the personal data it may echo masked.

    Masks e-mail addresses (anything@anything), phone-like numbers (7 digits or more, spaces, dots, dashes,
    slashes and parentheses allowed, dates excepted) and quoted values ("Jane" -> "…"), but not what an operator
    needs: status and error codes, shorter numbers, dates, unquoted words, and quoted names of things (keys of
    an echoed object, discriminators such as com.apsis1.attributes.email, field names such as K_CONTACT).
    With `hint`, an address keeps its first letter and domain and a number its first and last digits, as in
    the logs and `explain` (mask_email, mask_phone); without, both are replaced whole (<email>, <phone>).
    The text is cut to `limit` characters first. Deterministic, and masking masked text changes nothing.
    """
    if not text:
        return ""
    text = _bounded(str(text), limit)
    text = _QUOTED.sub(_mask_quoted, text)
    if "@" in text or "%40" in text:
        text = _EMAIL_IN_TEXT.sub(lambda m: _mask_address(m.group(), hint), text)
    return _NUMBER_IN_TEXT.sub(lambda m: _mask_number(m, hint), text)


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    if not text[limit].isspace():
        head = re.sub(r"\S+\Z", "", head)  # a token cut in two could hide an address from the pattern
    head = head.rstrip(" \u00a0.-/()+0123456789")  # and a phone number cut in two, its first digits
    return f"{head}{MASKED}"


def _mask_quoted(match: re.Match[str]) -> str:
    body = next(group for group in match.group("d", "s", "c", "t") if group is not None)
    if _NAME_QUOTED.fullmatch(body) or _is_object_key(match, body):
        return match.group()
    opening = match.group()[0]
    closing = {"\u201c": "\u201d", "\u2018": "\u2019"}.get(opening, opening)
    return f"{opening}{MASKED}{closing}"


def _is_object_key(match: re.Match[str], body: str) -> bool:
    """'"status": 400' in an echoed JSON object or dict: the key is a name, its value may be personal."""
    before = match.string[max(0, match.start() - 16) : match.start()].rstrip()
    after = match.string[match.end() : match.end() + 16].lstrip()
    return before.endswith(("{", ",")) and after.startswith(":") and bool(_OBJECT_KEY.fullmatch(body))


def _mask_address(address: str, hint: bool) -> str:
    return mask_email(address.replace("%40", "@")) if hint else "<email>"


def _mask_number(match: re.Match[str], hint: bool) -> str:
    number = match.group("phone")
    if number is None or sum(c.isdigit() for c in number) < PHONE_MIN_DIGITS:
        return match.group()
    return mask_phone(number) if hint else "<phone>"
