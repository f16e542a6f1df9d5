"""Environment variables, parsed once at cold start so a missing setting fails loudly and early."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # requests is heavy; the webhook Lambda never needs it
    from .clients.http import RetryPolicy


class Settings(BaseModel):
    config_table: str = Field(alias="CONFIG_TABLE")
    state_table: str = Field(alias="STATE_TABLE")
    contact_queue_url: str = Field(alias="CONTACT_QUEUE_URL")
    optout_queue_url: str = Field(default="", alias="OPTOUT_QUEUE_URL")
    state_machine_arn: str = Field(default="", alias="STATE_MACHINE_ARN")
    pages_bucket: str = Field(default="", alias="PAGES_BUCKET")
    # Seconds a cached integration config or secret is trusted before it is read again.
    cache_seconds: float = Field(default=60.0, alias="EFFICY_SYNC_CACHE_SECONDS")
    # In-call retries of the API clients (429/5xx/timeouts) before a message or page is failed and retried later.
    http_retries: int = Field(default=5, alias="EFFICY_SYNC_HTTP_RETRIES")
    http_backoff: float = Field(default=0.5, alias="EFFICY_SYNC_HTTP_BACKOFF")
    http_read_timeout: float = Field(default=30.0, alias="EFFICY_SYNC_HTTP_READ_TIMEOUT")
    # Longest wait a Retry-After header may impose on one retry (urllib3 alone honours any value).
    retry_after_max: float = Field(default=30.0, alias="EFFICY_SYNC_RETRY_AFTER_MAX")
    # Seconds of a Lambda's remaining time kept back from API calls, to report the batch and log.
    deadline_reserve: float = Field(default=5.0, alias="EFFICY_SYNC_DEADLINE_RESERVE")
    # Largest webhook body accepted (Lambda's synchronous payload limit is 6 MB).
    max_webhook_bytes: int = Field(default=6 * 1024 * 1024, alias="EFFICY_SYNC_MAX_WEBHOOK_BYTES")
    # Large webhooks (efficy_sync.bundles): above `webhook_bundle_over` persons the changes go to this queue in
    # bundles of at most `webhook_bundle_bytes` and are split onto the FIFO queue after the 202. No queue: never.
    webhook_bundle_queue_url: str = Field(default="", alias="WEBHOOK_BUNDLE_QUEUE_URL")
    webhook_bundle_over: int = Field(default=100, ge=0, alias="EFFICY_SYNC_WEBHOOK_BUNDLE_OVER")
    webhook_bundle_bytes: int = Field(default=250_000, ge=4096, le=262_144, alias="EFFICY_SYNC_WEBHOOK_BUNDLE_BYTES")

    def retry_policy(self) -> RetryPolicy:
        from .clients.http import RetryPolicy

        return RetryPolicy(
            total=self.http_retries,
            backoff_factor=self.http_backoff,
            read_timeout=self.http_read_timeout,
            retry_after_max=self.retry_after_max,
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
