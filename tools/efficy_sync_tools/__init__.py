"""Tooling that is not shipped to Lambda: CLI, embedded local stack, simulators."""
