"""One consent entry as APSIS One answers it, read the one way every reader needs: an export, a profile's
consents read before a first opt-in, the read-back after a 409. Its own module so that the client
(apsis.py) and the export (apsis_export.py, which builds on the client) share it without an import cycle."""

from __future__ import annotations

from typing import Any

from .errors import ApsisUnavailable

#: APSIS One's channel discriminators by our channel names (contracts/apsis-one.md §2)
CHANNELS = {"email": "com.apsis1.channels.email", "sms": "com.apsis1.channels.sms"}
CHANNEL_NAMES = {disc: name for name, disc in CHANNELS.items()}
#: the consent types APSIS One has (contracts/apsis-one.md §2), as we compare them
CONSENT_TYPES = frozenset({"opt-in", "opt-out", "pending-opt-in", "confirmed-opt-in"})


def consent_entry(entry: dict[str, Any]) -> tuple[tuple[str, str], str]:
    """((topic, channel name), type) of one consent entry. One whose topic, channel or type we cannot read
    raises: read as "no consent" or an unknown type, reconcile called a held opt-out drift and its repair opted
    the person in, and a first opt-in overwrote an opt-out APSIS held (types under another key, a channel
    left out or given by name, a type spelled "OPT_OUT")."""
    topic = entry.get("topic_discriminator") or entry.get("topic")
    channel = str(entry.get("channel_discriminator") or entry.get("channel") or "")
    channel = CHANNEL_NAMES.get(channel, channel.lower() if channel.lower() in CHANNELS else "")
    kind = str(entry.get("consent_type") or entry.get("type") or "").strip().lower().replace("_", "-")
    if not isinstance(topic, str) or not topic or not channel or kind not in CONSENT_TYPES:
        raise ApsisUnavailable("APSIS: a consent entry is in a shape we cannot read (topic, channel or type)")
    return (topic, channel), kind
