"""Reading Efficy's JSON-RPC answers and building its request contexts: pure functions of the payload, kept
apart from transport, authentication and retries (`efficy.EfficyClient` inherits them), so a second Efficy
flavour can reuse or replace them without touching the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.pii import redact_text
from efficy_sync.profile_rows import PROFILES_UNREAD, Unreadable, memberships
from efficy_sync.values import to_bool, whole_number

if TYPE_CHECKING:
    from efficy_sync.config import ProfileRowStatus

#: a decoded JSON answer of Efficy whose shape nothing has checked yet (the parsing methods check it)
UncheckedJson = Any
#: the charset a Content-Type declares
_CHARSET = re.compile(r"charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)
#: a records page's `status` that says it failed
_FAILED = frozenset({"error", "failed", "failure", "fail"})


class EfficyParsing:
    """The payload half of `EfficyClient`: error shapes, datasets, persons."""

    #: how a CRM-profile row says in or out (the integration's efficy.profile_status); None: the defaults
    profile_status: ProfileRowStatus | None = None

    def _edit_context(self, key: int, funcs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "#id": f"edit-{key}",
            "@name": "edit",
            "entity": "Cont",
            "key": int(key),
            "commit": True,
            "closecontext": True,
            "@func": funcs,
        }

    @staticmethod
    def _api_context(func: dict[str, Any]) -> dict[str, Any]:
        return {"#id": f"api-{func['@name']}", "@name": "api", "@func": [func]}

    @staticmethod
    def body_text(content: bytes, content_type: str | None) -> str:
        """An answer's text: UTF-8 (a byte-order mark, which IIS may put first, dropped), else the charset its
        Content-Type declares (an Efficy on a Latin-1 or Windows-1252 database: a name such as "Zoë" was not
        UTF-8, so every read of that person, and every full-sync page holding them, failed as "not JSON" for
        good). A body that is valid UTF-8 is read as UTF-8 whatever the header says, as before."""
        try:
            return content.decode("utf-8-sig")
        except UnicodeDecodeError:
            declared = _CHARSET.search(content_type or "")
            if declared is None or declared.group(1).lower().replace("_", "-") in ("utf-8", "utf8"):
                raise
            try:
                return content.decode(declared.group(1))
            except LookupError:  # a charset Python does not know: not JSON we can read
                raise UnicodeDecodeError("utf-8", content, 0, len(content), "unknown declared charset") from None

    @classmethod
    def rpc_error(cls, obj: UncheckedJson) -> tuple[str | None, str] | None:
        """(code, text) if this answer element (or one of its functions) reports an error, else None.

        Shapes: {"@name":"exception","#error":{errorcode, errorstring}}, {"#error": {...} | "text" | true with
        "#message"}, {"error": true, code, message, detail}, and the same report as "@error", as an "error" object
        or text, or as an "errors" list, or `success`/`ok` false; any of them may also sit on a func entry.
        """
        if not isinstance(obj, dict):
            return None
        if obj.get("error") is True:
            text = " ".join(str(obj[k]) for k in ("message", "detail") if obj.get(k))
            return (str(obj["code"]) if obj.get("code") is not None else None, text or "error")
        # "@error", an "error" object or text, an "errors" list: other spellings of the same report. Unread, a
        # context that reported one beside empty datasets (a person our API user may not see) read as "no such
        # record", and a records export that leaves that person out too confirmed them deleted
        error = obj.get("#error") or obj.get("@error") or cls._other_error(obj)
        if error:  # null, false, "" or {} say there is none (an answer may carry the key empty); the data must
            return cls._read_error(error, obj)  # still be there: a read without its dataset is refused on its own
        if obj.get("@name") == "exception":
            return (None, str(obj.get("#message", "exception")))
        if cls._said_false(obj.get("success")) or cls._said_false(obj.get("ok")):
            # a failure said as a flag beside (empty) datasets: read as an answer, a removal that failed passed
            # for done and a read of no CRM profile for "out of them all", and the opt-out was confirmed
            return (None, str(obj.get("message") or obj.get("#message") or "success: false"))
        for func in obj.get("@func") or []:
            found = cls.rpc_error(func) if isinstance(func, dict) else None
            if found:
                return found
        return None

    @staticmethod
    def _said_false(flag: Any) -> bool:
        """A `success`/`ok` flag that says false: false, or as Efficy sends booleans, "0"/"false" (contract §3)."""
        return to_bool(flag) is False

    @staticmethod
    def _other_error(obj: dict[str, Any]) -> Any:
        """An error under "error" (an object or a text: `true` is read above) or "errors" (the first entry)."""
        error = obj.get("error")
        if isinstance(error, dict | str) and error:
            return error
        errors = obj.get("errors")
        if isinstance(errors, list) and errors:
            return errors[0] or "error"
        return None

    @classmethod
    def page_error(cls, payload: dict[str, Any]) -> bool:
        """Whether a records page's envelope reports an error beside its list: any spelling rpc_error reads
        ("error", "errors", "#error", "@error"), or `success`/`ok` false, or a `status` of failure. Its list (often
        empty) then proves nothing: read as a page, an empty one confirmed persons absent (deleted in APSIS One)
        and ended a full sync's export early."""
        status = payload.get("status")
        code = whole_number(status)  # 503 or "503": Efficy sends numbers as text too
        failed = str(status).lower() in _FAILED or (code is not None and code >= 400)
        return failed or bool(cls.rpc_error(payload))  # rpc_error reads `success`/`ok` false

    @staticmethod
    def _business_error(op: str, error: tuple[str | None, str]) -> EfficyBusinessError:
        code, text = error
        text = redact_text(text)  # error texts end up in logs, person states and run records
        return EfficyBusinessError(f"Efficy refused {op}: {code or 'error'}: {text}", code=code)

    @staticmethod
    def _read_error(error: Any, holder: dict[str, Any]) -> tuple[str | None, str]:
        if isinstance(error, dict):
            code = error.get("errorcode", error.get("code"))
            text = error.get("errorstring", error.get("message", error.get("title", "")))
            return (str(code) if code is not None else None, str(text))
        if error is True:
            return (None, str(holder.get("#message", "error")))
        return (None, str(error))

    @classmethod
    def dataset_rows(cls, obj: UncheckedJson, name: str = "dataset") -> list[dict[str, Any]] | None:
        """The rows of the first {"#class": "dataset"} found at any depth (Efficy's nesting varies)."""
        if isinstance(obj, dict):
            if obj.get("#class") == name:
                data = obj.get("#data")
                if isinstance(data, dict):  # Efficy U nests the rows one level down: {"#data": {"data": [...]}}
                    data = cls._whole(data)
                if isinstance(data, list):
                    return cast("list[dict[str, Any]]", data)
            children: Iterable[Any] = obj.values()
        elif isinstance(obj, list):
            children = obj
        else:
            return None
        for child in children:
            rows = cls.dataset_rows(child, name)
            if rows is not None:
                return rows
        return None

    @staticmethod
    def _whole(page: dict[str, Any]) -> Any:
        """The rows of a nested dataset, refused when it says it is one page of several: memberships read from
        a part (a person's CRM profiles, a query's members) would opt out and untag everyone in the rest."""
        rows = page.get("data")
        total = whole_number(page.get("total"))
        more = page.get("hasMore") is True or bool(page.get("next"))
        if isinstance(rows, list) and (more or (total is not None and total > len(rows))):
            raise EfficyBusinessError(
                f"a dataset of {len(rows)} row(s) that says it is part of more (total {page.get('total')!r}): "
                "membership not judged from a part",
                code="INVALID_RESPONSE",
            )
        return rows

    @staticmethod
    def _func(element: dict[str, Any], name: str) -> dict[str, Any] | None:
        funcs = element.get("@func") or []
        if not isinstance(funcs, list) or not all(isinstance(f, dict) for f in funcs):
            raise EfficyBusinessError("an answer whose functions are not objects", code="INVALID_RESPONSE")
        return next((f for f in funcs if str(f.get("@name", "")).lower() == name), None)

    @staticmethod
    def _record(row: Any) -> dict[str, Any]:
        """A master row or a records-page entry, which must be an object. Anything else raised AttributeError,
        which the real-time worker reads as the integration's failure: the batch-mates of the person whose
        answer it was failed with them on every delivery (worker.prefetch), instead of that person alone."""
        if not isinstance(row, dict):
            raise EfficyBusinessError("a record that is not an object", code="INVALID_RESPONSE")
        return row

    @staticmethod
    def _as_int(value: Any, what: str = "K_CONTACT") -> int:
        """A key as Efficy sends it (number, float or string); a value that is not one is a malformed answer,
        never a guess (values.whole_number says why float() is not enough)."""
        number = whole_number(value)
        if number is None:
            raise EfficyBusinessError(f"answer with a {what} that is not a record key", code="INVALID_RESPONSE")
        return number

    def _profiles_of(self, rows: Any, person: dict[str, Any]) -> None:
        """Set the person's CRM profile ids from their profile rows or ids; leave them out (membership unknown,
        consents left as they are) when any row cannot be read, and say why under PROFILES_UNREAD: an
        unreadable row must not read as "not a member", which would opt the person out, nor a row of a
        profile the person left as a member, which would opt them in (efficy_sync.profile_rows)."""
        if rows is None or not isinstance(rows, list):
            return
        try:
            person["profiles"] = sorted(memberships(rows, self.profile_status))
        except Unreadable as exc:
            person[PROFILES_UNREAD] = exc.reason

    def _person_from_consult(self, element: dict[str, Any], asked: int) -> dict[str, Any] | None:
        """The person of a consult answer to the key `asked`; None when its master dataset is there and empty
        (no such record, still to be confirmed). An answer without a master dataset at all is malformed, not an
        absence, and so is a record of another contact: answers matched by position (an Efficy that does not
        echo `#id`, in another order) or a consult redirected (a merge) gave one person another's e-mail and
        CRM profiles, and so an opt-out on their evidence."""
        master_rows = self.dataset_rows(self._func(element, "master"))
        if master_rows is None:
            raise EfficyBusinessError("consult answer without a master dataset", code="INVALID_RESPONSE")
        if not master_rows:
            return None
        person = {name.upper(): value for name, value in self._record(master_rows[0]).items()}
        person["K_CONTACT"] = self._as_int(person.get("K_CONTACT", element.get("key")))
        if person["K_CONTACT"] != asked:
            raise EfficyBusinessError(
                f"the consult of contact {asked} answered contact {person['K_CONTACT']}", code="INVALID_RESPONSE"
            )
        # no detail dataset, or a row without a readable K_PROFILE: membership unknown, not "member of nothing"
        self._profiles_of(self.dataset_rows(self._func(element, "detail")), person)
        return person

    def _person_from_record(self, record: dict[str, Any]) -> dict[str, Any]:
        fields = self._record(record).items()
        person = {(name if name == "profiles" else name.upper()): value for name, value in fields}
        person["K_CONTACT"] = self._as_int(person.get("K_CONTACT"))
        if "profiles" in person:
            # `null` or an unreadable entry: unknown (the key is dropped), never an empty membership
            self._profiles_of(person.pop("profiles"), person)
        return person

    def _contact_keys(self, answer: dict[str, Any]) -> list[int]:
        """K_CONTACTs of an answer's dataset. An answer without a dataset, or rows without K_CONTACT, is an
        error, never an empty list: a query tag would untag all its members on an empty one."""
        rows = self.dataset_rows(answer)
        if rows is None:
            raise EfficyBusinessError("answer without a dataset", code="INVALID_RESPONSE")
        # column names in any case, as the person reads take them (k_contact, K_Contact)
        upper = [{str(name).upper(): value for name, value in row.items()} for row in rows if isinstance(row, dict)]
        if len(upper) < len(rows) or any("K_CONTACT" not in row for row in upper):
            raise EfficyBusinessError("dataset rows without K_CONTACT", code="INVALID_RESPONSE")
        return list(dict.fromkeys(self._as_int(row["K_CONTACT"]) for row in upper))
