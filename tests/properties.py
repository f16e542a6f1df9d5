"""How many examples a property test tries, by hypothesis profile (registered in tests/conftest.py).

Each property states the examples it wants under hypothesis's own default of 100 (`examples(1500)`); the
`ci` profile, loaded by default, runs a tenth of that, so `make test` stays short, and
`--hypothesis-profile=thorough` ten times as many, for a long run before a release or after touching consent.
"""

from __future__ import annotations

from hypothesis import settings

HYPOTHESIS_DEFAULT = 100  # max_examples of hypothesis's own default profile: what each test's figure is for


def examples(at_default: int) -> int:
    """`at_default` scaled by the loaded profile (read when the test module is imported, after pytest has
    loaded the profile): at least 5, so a property is never skipped."""
    return max(5, round(at_default * settings.default.max_examples / HYPOTHESIS_DEFAULT))
