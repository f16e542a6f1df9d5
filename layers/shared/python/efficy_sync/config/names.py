"""Names fixed by Efficy and APSIS One, and the shapes of the names a config may use."""

from __future__ import annotations

EMAIL_FIELD = "EMAIL1"
KEY_FIELD = "K_CONTACT"
EMAIL_ATTRIBUTE = "com.apsis1.attributes.email"
CRMID_ATTRIBUTE = "com.apsis1.attributes.crmid"
MOBILE_ATTRIBUTE = "com.apsis1.attributes.mobile"
RESERVED_ATTRIBUTES = {EMAIL_ATTRIBUTE: EMAIL_FIELD, CRMID_ATTRIBUTE: KEY_FIELD}
OPERATORS = ("equals", "not_equals", "in", "is_empty", "not_empty")
