"""Step Functions fix for moto's interpreter, applied by the local stack only: a stopped execution stays ABORTED.

moto's `Environment.set_error` replaces whatever state the program is in, a stop included. When an execution is
stopped while a Map state waits on its iterations (a full sync's pages), the Map's evaluation then ends in an
error of moto's own (`States.Runtime`, an AttributeError in its abort path), and the execution, ABORTED a moment
before, is reported FAILED: five stops in five of a Map of Wait states. `full-sync cancel` ends the run with the
status it reads after its stop, so on the local stack a cancelled run was now and then reported failed (seen in
`make test`), depending on which came first, the CLI's read or moto's error. On AWS a stopped execution is
ABORTED for good: here too, an error raised after the stop no longer changes the execution's state.
"""

from __future__ import annotations

import functools
from typing import Any

_applied = False


def apply() -> None:
    """Keep a stopped program stopped when moto's interpreter reports an error afterwards (idempotent)."""
    global _applied
    if _applied:
        return
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    original = Environment.set_error

    @functools.wraps(original)
    def set_error(self: Any, error: Any) -> None:
        with self._state_mutex:  # a re-entrant lock: the original takes it again
            if isinstance(self._program_state, ProgramStopped):
                return
            original(self, error)

    Environment.set_error = set_error  # type: ignore[method-assign]
    _applied = True
