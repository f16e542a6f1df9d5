"""Logger and metrics, created once and imported by every handler (powertools: JSON logs, EMF metrics).

Log fields identify a person by `pii.hash_key(...)`, never by e-mail or phone number.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="efficy-sync")
metrics = Metrics(namespace="EfficySync", service="efficy-sync")

__all__ = ["MetricUnit", "logger", "metrics"]
