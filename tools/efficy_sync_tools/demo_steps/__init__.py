"""Steps of `efficy-sync demo`, one module per product feature."""
