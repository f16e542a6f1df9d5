"""The refusal of an APSIS API client's token request, shared by every container (clients/token_hold.py says why).

Item: pk "TOKEN_REFUSAL#<account hash>" (budget.account_key: the API's URL and client id, as the request budget
names the account), sk "CREDS#<hash of the credentials>": `kind` ("auth" or "rate_limit"), `status`,
`message` (the refusal as raised: status and APSIS's title, redacted), `until` (epoch seconds), `refused_at`
(epoch seconds) and `expires_at` (TTL, an hour on: DynamoDB deletes late, so readers judge `until` themselves).
Written by the client whose token request APSIS refused; read by every client of those credentials before it
asks for a token; deleted by a client whose token request succeeded (`clear`), unless it was recorded after
that request was sent: left standing, a recovered account stayed held by every other container and command
for the rest of the hold.

Why the state table, not the SSM token parameter (apsis_tokens.py): the record is no credential (a kind and a
time), so it needs no SecureString; it sits beside the account's request budget, under the same account hash;
the table's TTL removes it, where an SSM parameter stays until deleted; every function that calls APSIS has
the table (STATE_TABLE), while the token store is optional (no prefix: no store); and a consistent GetItem is
cheap and scales with the table, where SSM's GetParameter and PutParameter rates are shared by the whole AWS
account (and already spent on tokens and secrets): fifty containers refused at once would be throttled there.
The token parameter is also named by client id only, and a rotated secret must not inherit the old one's hold.

Why a hash of the credentials in the key: a new secret (client id or secret rotated) is not held back by the
old one's refusal. The hash is PBKDF2, salted with the account: the table is readable by roles that may not
read the secret, and a fast hash of a weak secret could be tested offline. Never the secret itself.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from ..aws import brief_client
from .dynamo import from_item, key, to_item

#: how long DynamoDB keeps a record after its hold (its TTL deletes within days; readers check `until`)
RECORD_TTL_SECONDS = 3600
#: PBKDF2 rounds for the credentials' hash: computed once per client, on its first token request
CREDENTIALS_HASH_ROUNDS = 20_000
#: how much earlier than a successful token request was sent a refusal must have been recorded for that success to
#: delete it: `refused_at` and `asked_at` are read from two machines' clocks (a Lambda's, an admin's laptop), and a
#: refusal recorded just after the request was sent, by a clock a little behind, looked older and was deleted
CLEAR_SKEW_SECONDS = 5.0


def credentials_key(account: str, client_id: str, client_secret: str) -> str:
    """A salted, slow hash of the credentials (the sort key): equal for equal credentials, nothing else."""
    salt = f"efficy-sync token refusal|{account}".encode()
    secret = f"{client_id}|{client_secret}".encode()
    return hashlib.pbkdf2_hmac("sha256", secret, salt, CREDENTIALS_HASH_ROUNDS).hex()[:32]


class TokenRefusals:
    """clients.token_hold.SharedRefusals in one item of the state table."""

    def __init__(self, table_name: str, account: str, client_id: str, client_secret: str) -> None:
        self._table = table_name
        self._account = account
        self._creds: tuple[str, str] | None = (client_id, client_secret)
        self._sk = ""

    def _key(self) -> dict[str, Any]:
        if self._creds is not None:  # hashed on first use (a token request), then forgotten
            self._sk, self._creds = f"CREDS#{credentials_key(self._account, *self._creds)}", None
        return key(f"TOKEN_REFUSAL#{self._account}", self._sk)

    def load(self) -> tuple[str, int | None, str, float] | None:
        """The recorded refusal, or None (none, or not readable as one). One consistent read (a client that
        waited for another's token request reads its refusal at once), on the brief client: a slow table costs
        seconds, not the invocation, before the client asks APSIS as it would without the record."""
        answer = brief_client("dynamodb").get_item(TableName=self._table, Key=self._key(), ConsistentRead=True)
        item = from_item(answer.get("Item") or {})
        try:
            status = item.get("status")
            return (
                str(item["kind"]),
                None if status is None else int(status),
                str(item["message"]),
                float(item["until"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, kind: str, status: int | None, message: str, until: float, refused_at: float | None = None) -> None:
        """Records a refusal (a later one replaces it: its `until` is later). `refused_at` orders it against a
        success (`clear`); a record without it (an older version's) is cleared by any success."""
        fields: dict[str, Any] = {"kind": kind, "status": status, "message": message, "until": until}
        if refused_at is not None:
            fields["refused_at"] = refused_at
        brief_client("dynamodb").put_item(
            TableName=self._table,
            Item={**self._key(), **to_item({**fields, "expires_at": int(until) + RECORD_TTL_SECONDS})},
        )

    def clear(self, asked_at: float) -> None:
        """Deletes the record after a token request sent at `asked_at` succeeded, unless it holds a refusal
        recorded since (at or after `asked_at`: which of the two APSIS answered last is unknown, so the refusal
        stands). "Since" allows for the two clocks: a refusal recorded less than CLEAR_SKEW_SECONDS before
        `asked_at` stands too (the hold then ends with its `until`, as before this delete). One conditional delete;
        none to delete is no error."""
        ddb = brief_client("dynamodb")
        # a refusal recorded since our request was sent fails the condition: it stands
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.delete_item(
                TableName=self._table,
                Key=self._key(),
                ConditionExpression="attribute_not_exists(refused_at) OR refused_at < :asked",
                ExpressionAttributeValues=to_item({":asked": asked_at - CLEAR_SKEW_SECONDS}),
            )
