"""Environment variables, parsed once at cold start so a missing setting fails loudly and early."""

from __future__ import annotations

import os
from contextvars import ContextVar
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
    # SSM path under which APSIS One access tokens are shared (apsis_tokens.py); empty: each client its own.
    apsis_token_prefix: str = Field(default="", alias="APSIS_TOKEN_PARAMETER_PREFIX")
    # Seconds a cached integration config or secret is trusted before it is read again.
    cache_seconds: float = Field(default=60.0, alias="EFFICY_SYNC_CACHE_SECONDS")
    # After a webhook secret or opt-out token is changed, calls with its previous value are still accepted this
    # long (secrets.accepted_secret), so the caller can be updated after it; 0: never.
    secret_grace_seconds: float = Field(default=3600.0, ge=0, alias="EFFICY_SYNC_SECRET_GRACE_SECONDS")
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


#: The variables the running function does not have, with the function's name; unset on Lambda, where the
#: environment is the function's own. The local stack runs every handler in one process whose environment holds
#: every function's variables: it sets this around each invocation (tools: local/lambdas.py), so a handler that
#: reads a variable only another function has fails here as it would on AWS. Threads a handler starts do not
#: inherit it and read the process's settings.
function_scope: ContextVar[tuple[str, frozenset[str]] | None] = ContextVar("function_scope", default=None)


class _SettingsSource:
    """`settings()`: read once per process (or once per function, inside the local stack's `function_scope`);
    `settings.cache_clear()` makes the next call read the environment again."""

    def __init__(self) -> None:
        self._process: Settings | None = None
        self._functions: dict[str, Settings] = {}

    def __call__(self) -> Settings:
        scope = function_scope.get()
        if scope is None:
            if self._process is None:
                self._process = Settings.model_validate(dict(os.environ))
            return self._process
        name, hidden = scope
        found = self._functions.get(name)
        if found is None:
            environ = {key: value for key, value in os.environ.items() if key not in hidden}
            found = self._functions[name] = Settings.model_validate(environ)
        return found

    def cache_clear(self) -> None:
        self._process = None
        self._functions = {}


settings = _SettingsSource()
