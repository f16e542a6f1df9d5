"""When an APSIS opt-out happened: the `occurred_at` the marketer's Webhook node sends, read in the forms it may
take and bounded by when we received it (optout_event.py reads the rest of the call).

Why so lenient and so bounded: the node does not resend a call we refuse, so a time we cannot use is replaced
(by the receive time), never a reason to lose the opt-out; and every replacement makes the opt-out newer, the
safe direction (it wins over a CRM opt-in it may in truth predate).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Literal

#: why an opt-out's occurred_at was replaced by the receive time (None: it was kept or not given)
TimeFix = Literal["future", "old", "unreadable"] | None
#: How far ahead of our clock `occurred_at` may be before it is logged as wrong (clocks differ a little).
FUTURE_SKEW_SECONDS = 300
MAX_TIME_TEXT = 64
# The times the node may send besides ISO 8601 (the body is whatever the marketer sets up): epoch seconds or
# milliseconds (9 to 14 digits: from 1973 on), day-first "05/02/2025 10:00", RFC 2822, and a " UTC" suffix.
_EPOCH = re.compile(r"^\d{9,14}(\.\d{1,9})?$")
_EPOCH_MS_FROM = 10**11  # 1e11 seconds is the year 5138, 1e11 milliseconds 1973: from here up, milliseconds
_DAY_FIRST = re.compile(
    r"^(\d{1,2})[./-](\d{1,2})[./-](\d{4})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?)?$"
)
#: a clock time in an occurred_at: hours and minutes, then seconds if given
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")
_UTC_SUFFIX = re.compile(r"(?:\s*\b(?:UTC|GMT)|(?<=\d)Z)$", re.IGNORECASE)
#: `apsis.optout_time_zone` for "the zone of a time without one is not known"
UNKNOWN_ZONE = "unknown"
#: the UTC offsets in use run from -12:00 to +14:00: a local time without a zone means, in UTC, at the earliest
#: this much before it and at the latest this much after it
_EASTMOST, _WESTMOST = timedelta(hours=14), timedelta(hours=12)


def naive_zone(name: str) -> tzinfo | None:
    """The zone `apsis.optout_time_zone` names: UTC, an IANA zone, or None for "unknown" (then a time without a
    zone is read as the latest moment it can mean, see occurred_at). A zone this runtime cannot load (no time
    zone database) is "unknown" too: config validation loaded it, so this is a runtime without the data, and the
    latest reading can only make an opt-out newer, the safe direction."""
    if name.upper() == "UTC":
        return UTC
    if name == UNKNOWN_ZONE:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _meanings(moment: datetime, zone: tzinfo | None) -> tuple[datetime, datetime]:
    """The earliest and the latest a time read without a zone can mean, in UTC: placed in `zone`, the two
    meanings of the hour that happens twice when the clocks go back; the zone unknown (None), anywhere from
    UTC+14 to UTC-12."""
    if zone is None:
        return (moment - _EASTMOST).replace(tzinfo=UTC), (moment + _WESTMOST).replace(tzinfo=UTC)
    first, second = (moment.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    return min(first, second), max(first, second)


def _epoch(number: float) -> datetime | None:
    """Epoch seconds, or milliseconds from _EPOCH_MS_FROM up; None before 1973 or past 5138 (and NaN)."""
    if not 10**8 <= number < 10**14:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=number / 1000 if number >= _EPOCH_MS_FROM else number)


def _day_first(text: str) -> datetime:
    match = _DAY_FIRST.match(text)
    if not match:
        raise ValueError("not D/M/Y")
    day, month, year, *clock = match.groups()
    hour, minute, second = (int(part or 0) for part in clock[:3])
    return datetime(int(year), int(month), int(day), hour, minute, second, int((clock[3] or "0").ljust(6, "0")))


_TIME_FORMATS: tuple[Callable[[str], datetime], ...] = (datetime.fromisoformat, _day_first, parsedate_to_datetime)


def _moment(value: Any) -> datetime | None:
    """The time a given occurred_at means (naive: it names no zone), or None when it is no time we can read: ISO
    8601, epoch seconds or milliseconds (a number or its digits), day-first D/M/Y [H:M[:S]] or RFC 2822 (whose
    "-0000", zone unknown, comes back naive), each with an optional " UTC" / " GMT" / "Z" (then in UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch(value)
    if not isinstance(value, str) or len(value) > MAX_TIME_TEXT:
        return None  # a list, an object, true, a form's field given twice with different times
    text = value.strip()
    if _EPOCH.match(text):
        return _epoch(float(text))
    suffix = _UTC_SUFFIX.search(text)
    for parse in _TIME_FORMATS:
        try:
            moment = parse(text[: suffix.start()] if suffix else text)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        return moment.replace(tzinfo=UTC) if suffix and moment.tzinfo is None else moment
    return None


def _span(value: Any) -> timedelta:
    """How coarse a readable occurred_at is: a day for a date alone, a minute for a time without seconds, else
    nothing (seconds, epoch numbers)."""
    if not isinstance(value, str) or _EPOCH.match(value.strip()):
        return timedelta(0)
    clock = _CLOCK.search(value)
    if clock is None:
        return timedelta(days=1)
    return timedelta(0) if clock.group(1) else timedelta(minutes=1)


def occurred_at(
    value: Any, now: datetime, max_age: timedelta | None = None, zone: tzinfo | None = UTC
) -> tuple[str, TimeFix]:
    """The opt-out's time in UTC, bounded by `now` (when we received it) and, when given, by `now - max_age`.

    A later time cannot be true, and kept it would make every later genuine opt-out of the person look older and
    be dropped as a duplicate. An earlier time than the automation can take to call us is not believed either:
    once a CRM user has opted the person in again (the retired record keeps the old opt-out's time), a new
    unsubscribe whose time is bogus and old (a fixed date, the profile's creation date) would look like a late
    duplicate of the first and be dropped, and the next sync would mail them. Both are replaced by the receive
    time rather than refused: the automation does not resend a refused call, and an opt-out is never lost. So is
    a time we cannot read (`_moment` says what we can). The replacement can only make an opt-out newer, which is
    the safe direction (it wins over a CRM opt-in it may in truth predate). For the same reason a coarse time (a
    date alone, a time to the minute) stands for the latest moment it can mean, bounded by `now`: read as its
    start, a second unsubscribe on the same day as one a CRM user has since undone had the first's time, was
    taken for its duplicate and dropped, and the person stayed in the CRM profile. A time without a zone is
    read in `zone` (the integration's `apsis.optout_time_zone`, UTC by default: APSIS One's timestamps are UTC;
    None: unknown, the latest it can mean); read as UTC, a local time west of it looked hours older than it was,
    and a new unsubscribe passed for a duplicate of one recorded with its receipt time. Returns (time, "future" |
    "old" | "unreadable" when it was replaced and worth reporting, else None)."""
    fix: TimeFix = None
    moment = now if value is None or (isinstance(value, str) and not value.strip()) else _moment(value)
    if moment is None:
        moment, fix = now, "unreadable"
    try:
        earliest, moment = _meanings(moment, zone) if moment.tzinfo is None else (moment, moment)
        ahead = (earliest - now).total_seconds()  # "future" only when no meaning of it can be true
        if fix is None and (span := _span(value)):
            moment += span - timedelta(microseconds=1)  # the latest it can mean (bounded by `now` just below)
        moment = min(moment, now).astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset: not a time the automation sends
        moment, ahead, fix = now, 0.0, "unreadable"
    if ahead > FUTURE_SKEW_SECONDS:
        fix = "future"
    if max_age is not None and now - moment > max_age:
        moment, fix = now.astimezone(UTC), "old"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), fix
