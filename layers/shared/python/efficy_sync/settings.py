"""Environment variables, parsed once at cold start so a missing setting fails loudly and early."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
    config_table: str = Field(alias="CONFIG_TABLE")
    state_table: str = Field(alias="STATE_TABLE")
    contact_queue_url: str = Field(alias="CONTACT_QUEUE_URL")
    optout_queue_url: str = Field(default="", alias="OPTOUT_QUEUE_URL")
    state_machine_arn: str = Field(default="", alias="STATE_MACHINE_ARN")
    pages_bucket: str = Field(default="", alias="PAGES_BUCKET")
    # Seconds a cached integration config or secret is trusted before it is read again.
    cache_seconds: float = Field(default=60.0, alias="EFFICY_SYNC_CACHE_SECONDS")


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
