"""Conversions from values as Efficy sends them to values APSIS One accepts.

Efficy Enterprise sends almost everything as text: booleans as "1"/"0", numbers as strings, an empty date as
the zero date 30 Dec 1899. APSIS One rejects a phone number that is not in international format, so a value
that cannot be converted is not guessed at: the conversion returns `Skipped(reason)` and the caller leaves the
APSIS attribute alone and counts the skip. Reasons never quote the value (it may be personal data).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal

ValueType = Literal["string", "int", "float", "bool", "date", "datetime", "phone", "email"]
VALUE_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "date", "datetime", "phone", "email")

ZERO_DATE = "1899-12-30"

_TRUE = {"1", "true", "yes", "y", "t", "on"}
_FALSE = {"0", "false", "no", "n", "f", "off"}
#: a whole number as text, optionally with a zero fraction ("12", "-3", "12.0", "12,00")
_INTEGER = re.compile(r"^([+-]?[0-9]+)(?:[.,]0*)?$")
#: "1,000" / "1.000" / "2.500.000": a thousands separator or a decimal one (Efficy's value language decides,
#: and we are not told which): read either way it is off by a factor of 1000, so it is skipped
_GROUPED = re.compile(r"^[+-]?[1-9][0-9]{0,2}(?:[.,][0-9]{3})+$")
_PHONE_NOISE = re.compile(r"[\s.\-()/]")
#: a country code never starts with 0 (E.164), so "+0032..." or "+49 (030)..." is a mistyped number
_PHONE = re.compile(r"^\+[1-9][0-9]{7,14}$")
#: "(0)" marks the national trunk prefix to drop; a group in brackets that starts with 0 otherwise ("(030)")
#: keeps it, a comma or semicolon joins two numbers, and so does a slash before a few last digits ("45 67/68";
#: Belgian notation's "+32 2/123 45 67" is a separator): none can be repaired safely
_PHONE_AMBIGUOUS = re.compile(r"\(0[0-9]|[,;]|/[\s.\-]*[0-9]{1,4}[\s.\-]*$")
#: a number written as a decimal ("+32470123456.0": a phone field stored as a number and exported as text):
#: stripped of its dot as separators are, the fraction's 0 became a last digit, another person's number
_PHONE_DECIMAL = re.compile(r"[0-9]{6,}[.,]0+$")
_EMAIL = re.compile(
    r"^(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_CLOCK = r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?)?$"  # seconds may carry a fraction
_DMY = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})" + _CLOCK)  # 05/02/2025, 05.02.2025, 05-02-2025
_YMD = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})" + _CLOCK)  # 2025/02/05
#: Efficy's empty date in the other forms day_first reads, with or without a time
_ZERO_DATE_FORMS = re.compile(r"^(?:30/12/1899|30\.12\.1899|30-12-1899|1899/12/30)\b")


@dataclass(frozen=True)
class Skipped:
    """A value that could not be converted; the attribute is left as it is in APSIS One."""

    reason: str


Converted = Any  # a converted value, None (empty: clear the attribute) or Skipped


def as_text(value: Any) -> str:
    """The text form Efficy would send, used to compare values in sync conditions (True -> "1", 2.0 -> "2")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value).strip()


#: a UTF-16 surrogate left alone in a str: json.loads joins an escaped pair into one character, so any left is
#: half of one (a .NET server cutting a name in the middle of an emoji sends "Smith\\ud83d")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: the JSON escape of a surrogate, to look for in a body before walking what it decodes to
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def without_surrogates(value: Any) -> Any:
    """`value` (decoded JSON) with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder replaces a broken
    sequence. No UTF-8 can carry one: its hash, its stored state, the message that queues it and the call that
    sends it all failed, and one such name failed a whole full-sync page (every run, until edited in the CRM)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, list):
        return [without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {without_surrogates(key): without_surrogates(item) for key, item in value.items()}
    return value


_WHOLE = re.compile(r"^\+?([0-9]+)(?:\.0*)?$")


def whole_number(value: Any) -> int | None:
    """A record key as Efficy may send it (123, 123.0, "123", "123.0"); None for anything else.

    Strict on purpose: Python's float() also reads "12_865114542" (an Efficy relation key, key_relationId),
    "1e3" and "nan", and a misread key names another record. Booleans are not keys."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    match = _WHOLE.match(str(value).strip())
    return int(match.group(1)) if match else None


def is_zero_date(value: Any) -> bool:
    """Efficy's empty date, in every form day_first reads (30/12/1899, 30.12.1899, 30-12-1899, 1899/12/30) or ISO, with or
    without a time. A form day_first reads but this did not was sent as a real date: a German or Dutch locale's
    empty birthday ("30.12.1899") reached APSIS One as 1899-12-30."""
    text = as_text(value)
    return text.startswith(ZERO_DATE) or bool(_ZERO_DATE_FORMS.match(text))


def is_empty_value(value: Any) -> bool:
    """None, blank text and the zero date all mean "no value" in Efficy."""
    return as_text(value) == "" or is_zero_date(value)


def to_string(value: Any) -> str | None:
    if is_empty_value(value) and not isinstance(value, bool):
        return None
    return as_text(value)


def to_int(value: Any) -> int | Skipped | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else Skipped("not a whole number")
    text = as_text(value)
    if text == "":
        return None
    if _GROUPED.match(text):
        return Skipped("not a whole number: thousands or decimal separator?")
    # read exactly, never through float: Efficy sends numbers as text, and a customer number above 2**53 became
    # a neighbouring one (12345678901234567 -> ...568), sent silently and never corrected by a later sync
    whole = _INTEGER.match(text)
    if whole is None:
        return Skipped("not a whole number")
    return int(whole.group(1))


def to_float(value: Any) -> float | Skipped | None:
    if isinstance(value, bool):
        return Skipped("not a number")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = as_text(value)
        if text == "":
            return None
        if _GROUPED.match(text) or "_" in text:  # float() reads "1_000" as Python source would
            return Skipped("not a number: thousands or decimal separator?")
        if text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")  # a decimal comma, as some Efficy locales send
        try:
            number = float(text)
        except ValueError:
            return Skipped("not a number")
    if not math.isfinite(number):
        return Skipped("not a finite number")
    return number


def bool_word(text: str) -> bool | None:
    """True or False for a word that spells a boolean ("1", "true", "Yes", "on" ...), None for any other text."""
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def to_bool(value: Any) -> bool | Skipped | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = as_text(value).lower()
    if text == "":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return Skipped("not a boolean (expected '1'/'0' or 'true'/'false')")


def _parse_datetime(value: Any) -> datetime | Skipped | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if is_empty_value(value):
        return None
    text = as_text(value)
    try:
        return day_first(text) or datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        return Skipped("not a date")


def day_first(text: str) -> datetime | None:
    """Efficy's day-first form ("30/12/1899 08:00", "05/02/2025 10:00:00", with dots as a server set to a German
    locale writes it: "05.02.2025", or with dashes as a Netherlands locale does: "05-02-2025") or a year-first one
    with slashes ("2025/02/05 10:00") as a naive datetime, seconds with any fraction ("10:00:00.500"); None when
    the text is in neither form. Raises ValueError for a day or month out of range
    (31/02/2025). Change stamps in these forms compared as text sorted 20.12.2024 after 15.01.2025, and any
    "2025/..." after every ISO stamp: an old snapshot looked newer than an opt-out's confirmation."""
    text = text.strip()
    if match := _DMY.match(text):
        day, _, month, year, hour, minute, second, fraction = match.groups()
    elif match := _YMD.match(text):
        year, month, day, hour, minute, second, fraction = match.groups()
    else:
        return None
    micro = int((fraction or "0").ljust(6, "0"))
    return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)


def to_date(value: Any) -> str | Skipped | None:
    """ISO calendar date (YYYY-MM-DD); the time of day, if Efficy sends one, is dropped. An instant (a time with
    an offset) other than midnight is skipped: a local midnight written in UTC ("1985-06-15T22:00:00Z" for a
    birthday on the 16th in Brussels) names the day before, and which day was meant depends on a zone not sent."""
    parsed = _parse_datetime(value)
    if parsed is None or isinstance(parsed, Skipped):
        return parsed
    if parsed.tzinfo is not None and parsed.time() != time(0, 0):
        return Skipped("not a date: an instant whose day depends on the time zone")
    return parsed.date().isoformat()


def to_datetime(value: Any) -> str | Skipped | None:
    """ISO date and time; an offset is kept when Efficy sends one, a naive time stays naive."""
    parsed = _parse_datetime(value)
    if parsed is None or isinstance(parsed, Skipped):
        return parsed
    return parsed.isoformat(timespec="seconds")


def to_phone(value: Any) -> str | Skipped | None:
    """International numbers only ('+' and 8-15 digits); APSIS One refuses the rest, so they are skipped."""
    text = as_text(value)
    if text == "":
        return None
    text = text.replace("(0)", "")  # "+32 (0)470 ..." writes the national trunk prefix that must go
    if _PHONE_DECIMAL.search(text):
        return Skipped("not a phone number: written as a decimal number")
    if _PHONE_AMBIGUOUS.search(text):
        return Skipped("not one international phone number (two numbers, or a trunk 0 kept)")
    text = _PHONE_NOISE.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _PHONE.match(text):
        return Skipped("not an international phone number (+ and 8-15 digits)")
    if _trunk_zero_kept(text):
        return Skipped("not one international phone number (a trunk 0 kept after the country code)")
    return text


#: the country calling codes of one and two digits (ITU-T E.164); every other code has three
_SHORT_CODES = frozenset(
    [
        "1",
        "7",
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
    ]
)
#: countries whose numbers keep their leading 0 in international form: Italy, San Marino, Vatican City,
#: Côte d'Ivoire, Gabon, Congo, Benin (ten digits from 01 since November 2024)
_ZERO_KEPT = frozenset(["39", "378", "379", "225", "241", "242", "229"])


def _trunk_zero_kept(number: str) -> bool:
    """ "+32 0470 ..." as people write it: the national trunk 0 kept after the country code, a number nobody
    has (APSIS One would send the SMS to it). Dropping the 0 would be a guess, so the value is skipped as the
    bracketed "+49 (030)" is; in the countries whose numbers start with 0 it is part of the number."""
    digits = number[1:]
    code = next((digits[:n] for n in (1, 2) if digits[:n] in _SHORT_CODES), digits[:3])
    return digits[len(code) : len(code) + 1] == "0" and code not in _ZERO_KEPT


def ascii_domain(address: str) -> str:
    """`address` with an internationalised domain in its ASCII form (IDNA 2008: jane@müller.de ->
    jane@xn--mller-kva.de), the form DNS and mail servers use; any other text unchanged (a domain IDNA refuses
    is left for the caller's check to refuse)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    import idna  # only for such a domain: the ingest Lambdas never load it

    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def to_email(value: Any) -> str | Skipped | None:
    """A pragmatic check (one @, a dotted domain, no spaces); the domain is lower-cased (an internationalised
    one in its ASCII form, as mail is routed: otherwise the person had no address and no e-mail consent at
    all), the mailbox kept (a mailbox beyond ASCII is refused: few servers accept one)."""
    text = as_text(value)
    if text == "":
        return None
    if len(text) > 254:
        return Skipped("not a valid e-mail address")
    match = _EMAIL.match(ascii_domain(text))
    if not match or len(match["local"]) > 64:
        return Skipped("not a valid e-mail address")
    return f"{match['local']}@{match['domain'].lower()}"


_CONVERTERS = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "bool": to_bool,
    "date": to_date,
    "datetime": to_datetime,
    "phone": to_phone,
    "email": to_email,
}


def convert(value: Any, value_type: str) -> Converted:
    """Converts `value` to `value_type`: a value, None (empty: clear the attribute) or Skipped(reason)."""
    try:
        converter = _CONVERTERS[value_type]
    except KeyError:
        raise ValueError(f"unknown value type {value_type!r}; allowed: {', '.join(VALUE_TYPES)}") from None
    if isinstance(value, dict | list | tuple | set):
        # a lookup or a multi-value field ({"key": 2, "value": "NL"}): its text would be Python's, so never sent
        return Skipped("not a single value (an object or a list)")
    return converter(value)


def address_forms(email: str) -> list[str]:
    """The address, and the other form of an internationalised domain (Unicode <-> IDNA ASCII): a CRM user
    types one, we send APSIS the other (to_email)."""
    local, at, domain = email.rpartition("@")
    if not at:
        return [email]
    if not domain.isascii():
        other = ascii_domain(email)
    elif "xn--" in domain.lower():
        import idna

        try:
            other = f"{local}@{idna.decode(domain)}"
        except idna.IDNAError:
            other = email
    else:
        return [email]
    return [email] if other == email else [email, other]
