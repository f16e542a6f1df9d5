"""APSIS One access tokens shared by every container and CLI run of a stack: one SSM SecureString per API client.

Why: APSIS allows 10 token requests a minute per account (contracts/apsis-one.md §2: "cache the token") and a
token lives a day, yet each Lambda container and each CLI command fetched its own. A full sync's fan-out, the
real-time workers scaling out and an admin's commands together went over the limit, and each 429 cost its
caller up to half a minute of back-off (an `efficy-sync reconcile` on the local stack waited 17 s for one, in
`make test`). With the token shared, an API client asks for about one token a day, whatever the concurrency.

Why SSM Parameter Store: the token is a credential, and credentials live in Secrets Manager or SSM. A
SecureString (the account's aws/ssm key; the standard tier, free, unless a token outgrows its 4 KB) under the
stack's own prefix, where the functions that call APSIS may read, write and delete (template.yaml), nothing else. Its name is a hash of
the API's base URL and client id: integrations sharing an API client share its token, and a new client id gets
a new one. The value never reaches a log or an error message.

A failing store (no permission, throttled, a value too large) never fails a call: the client fetches a token of
its own, as before (ApsisTransport._store).

One client at a time asks APSIS for a new token (ApsisTransport._refresh_shared): the refresh lease is a second
parameter, `<token's name>-refresh`, created only if absent (PutParameter without Overwrite is SSM's only
conditional write); the others wait for the token its holder saves. A lease whose holder died lapses after its
time (it holds its end and a nonce, nothing secret): the next client deletes it and takes a new one. Two clients
that find the same lapsed lease may both end up fetching: bounded, and rare.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from .aws import client


def parameter_name(prefix: str, base_url: str, client_id: str) -> str:
    """`<prefix>/<hash of the API and client id>`: no client id in clear in a resource name."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}|{client_id}".encode()).hexdigest()[:32]
    return f"/{prefix.strip('/')}/{digest}"


class SsmTokenStore:
    """clients.apsis_transport.TokenStore in one SSM SecureString parameter."""

    def __init__(self, prefix: str, base_url: str, client_id: str) -> None:
        self.name = parameter_name(prefix, base_url, client_id)
        self.lease_name = f"{self.name}-refresh"
        self._lease: str | None = None  # the value of the lease this store's client holds

    def load(self) -> tuple[str, float] | None:
        answer = self._get(self.name)
        if answer is None:
            return None
        try:
            doc = json.loads(answer)
            return str(doc["token"]), float(doc["refresh_at"])
        except (ValueError, KeyError, TypeError):
            return None  # not ours to read: the next save overwrites it

    def save(self, token: str, refresh_at: float) -> None:
        client("ssm").put_parameter(
            Name=self.name,
            Value=json.dumps({"token": token, "refresh_at": refresh_at}),
            Type="SecureString",
            Overwrite=True,
            # standard (free) while the value fits its 4 KB, advanced beyond: APSIS does not bound a JWT's size
            Tier="Intelligent-Tiering",
        )

    def discard(self, token: str) -> None:
        """Deletes the parameter only while it holds `token` (a newer token another client saved is kept)."""
        found = self.load()
        if found is None or found[0] != token:
            return
        self._delete(self.name)

    def claim(self, seconds: float) -> bool:
        now = time.time()
        lease = json.dumps({"until": now + seconds, "nonce": secrets.token_hex(8)})
        for _ in range(2):  # a lapsed lease is deleted once, then taken
            try:
                client("ssm").put_parameter(
                    Name=self.lease_name, Value=lease, Type="String", Overwrite=False, Tier="Standard"
                )
            except Exception as exc:
                if _code(exc) != "ParameterAlreadyExists":
                    raise
            else:
                self._lease = lease
                return True
            held = self._get(self.lease_name)
            if held is not None and _until(held) > now:
                return False
            self._delete(self.lease_name)  # lapsed: its holder died mid-fetch (or it was released meanwhile)
        return False

    def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None and self._get(self.lease_name) == lease:
            self._delete(self.lease_name)

    def _get(self, name: str) -> str | None:
        try:
            return str(client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except Exception as exc:
            if _code(exc) == "ParameterNotFound":
                return None
            raise

    @staticmethod
    def _delete(name: str) -> None:
        try:
            client("ssm").delete_parameter(Name=name)
        except Exception as exc:
            if _code(exc) != "ParameterNotFound":
                raise


def _until(lease: str) -> float:
    """When a lease lapses; an unreadable one has lapsed."""
    try:
        return float(json.loads(lease)["until"])
    except (ValueError, KeyError, TypeError):
        return 0.0


def _code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def token_store(prefix: str, base_url: str, client_id: str) -> SsmTokenStore | None:
    """The shared store of an API client's token, or None when the stack names no prefix (tools, tests)."""
    return SsmTokenStore(prefix, base_url, client_id) if prefix.strip("/") else None
