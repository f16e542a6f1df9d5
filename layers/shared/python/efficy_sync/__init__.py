"""efficy-sync domain, clients and storage: the code every Lambda shares through the layer."""

__version__ = "0.1.0"
