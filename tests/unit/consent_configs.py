"""The integration config the consent tests share: three subscriptions (two e-mail, one SMS) on CRM profiles."""

from __future__ import annotations

from typing import Any

from efficy_sync.config import IntegrationConfig, config_from_dict

NEWS, EVENTS, SMS = "usercreated.topics.news-ab12", "usercreated.topics.events-ef56", "usercreated.topics.sms-cd34"
PROFILES = {(NEWS, "email"): 12, (SMS, "sms"): 13, (EVENTS, "email"): 14}


def consent_config(
    integration_id: str = "acme", profiles: dict[tuple[str, str], int] | None = None, **extra: Any
) -> IntegrationConfig:
    return config_from_dict(
        {
            "integration_id": integration_id,
            "efficy": {
                "base_url": "https://crm.example.com/crm",
                "api_key_secret": "x/e",
                "webhook_secret_secret": "x/w",
            },
            "apsis": {
                "base_url": "https://api.example.com",
                "section": "com.apsis1.sections.default",
                "credentials_secret": "x/a",
                "optout_token_secret": "x/o",
            },
            "field_mappings": [{"efficy": "MOBILE", "apsis": "com.apsis1.attributes.mobile", "type": "phone"}],
            "consent_mappings": [
                {"crm_profile": profile, "subscription": topic, "channel": channel}
                for (topic, channel), profile in (profiles or PROFILES).items()
            ],
            **extra,
        }
    )
