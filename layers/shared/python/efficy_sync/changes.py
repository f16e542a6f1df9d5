"""The per-person message that travels on the contact-changes FIFO queue.

It carries no personal data and nothing of the webhook record beyond who changed, how and when: the worker
refetches the person from Efficy and reads only the integration, the key and the operation. Changed field names
were carried once; a record with huge names then broke every SendMessageBatch Efficy retried, so they are
gone and every part of a message is bounded (messages still on a queue with the old field parse: extra keys are
ignored).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel


class ContactChange(BaseModel):
    integration_id: str
    person_key: int
    operation: Literal["Create", "Update", "Delete", "Resync"]
    date: str = ""  # Efficy's change date of this event (ISO 8601)
    source: Literal["webhook", "full_sync", "parked", "redrive", "retry", "reconcile"] = "webhook"
    # A hash of the changed values: two edits in the same second (Efficy dates may have no milliseconds)
    # must not be taken for one webhook retried; a retried webhook carries the same values.
    fingerprint: str = ""
    received_at: float = 0.0
    # Where the change entered (efficy_sync.correlation); also a message attribute. Not part of dedup_id: a
    # retried webhook has a new request id and must still be dropped as a copy.
    correlation_id: str = ""

    @property
    def group_id(self) -> str:
        """One FIFO group per person: a person's changes stay in order, different people run in parallel."""
        return f"{self.integration_id}#{self.person_key}"

    @property
    def dedup_id(self) -> str:
        """A retried webhook carries the same person, date and operation: SQS drops the copy."""
        raw = f"{self.integration_id}|{self.person_key}|{self.date}|{self.operation}|{self.source}|{self.fingerprint}"
        return hashlib.sha256(raw.encode()).hexdigest()
