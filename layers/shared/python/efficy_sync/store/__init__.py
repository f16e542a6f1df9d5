"""DynamoDB storage behind small classes: configs with history, per-person state, runs, parked changes."""
