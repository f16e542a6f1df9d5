"""The full-sync state machine's step events (statemachines/full_sync.asl.json), as typed models.

Each Task state invokes the step Lambda with {"step": NAME, ...}; the fields below are exactly what its
`Parameters.Payload` sends, so the handler parses an event once (`parse_step`) and dispatches on its class.
A payload that does not fit fails the step with `InvalidStepInput`, naming the step and the field, instead of a
KeyError deep in a step. The run object and the loop states' `previous` pass through unchanged: the models
allow fields they do not name, so adding one to Begin's payload never breaks a step already deployed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator


class InvalidStepInput(ValueError):
    """A step event that is not what the state machine sends (the message names the step and the field)."""


class RunRef(BaseModel):
    """The run object Begin returns (Run.step_payload) and every later step receives."""

    model_config = ConfigDict(extra="allow", frozen=True)

    run_id: str = Field(min_length=1)
    integration_id: str = Field(min_length=1)
    dry_run: bool = False
    execution_arn: str = ""
    config_version: int = 0
    write_mode: str = "diff"
    max_concurrency: int = 5


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BeginStep(_Step):
    step: Literal["begin"]
    #: whatever the admin started the execution with: Begin checks it (lifecycle.read_sync_input) so that the
    #: failed execution says what to fix in the admin's terms
    input: Any = None
    execution_arn: str = Field(min_length=1)


class PlanStep(_Step):
    step: Literal["plan"]
    run: RunRef


class ResumedStep(_Step):
    """Seams, Imports and Tags: a call that runs out of time answers `more: true`; the next gets it as
    `previous` (the Prepare* Pass state sends {} to the first call)."""

    step: Literal["seams", "imports", "tags"]
    run: RunRef
    previous: dict[str, Any] | None = None


class GateStep(_Step):
    """RemovalGate and HaltRun: the Tags step's last answer carries the untag counts."""

    step: Literal["removal_gate", "halt"]
    run: RunRef
    tags: dict[str, Any] | None = None


class ReleaseStep(_Step):
    step: Literal["release_removals"]
    run: RunRef
    tags: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None


class FinishStep(_Step):
    step: Literal["finish"]
    run: RunRef
    plan: dict[str, Any] | None = None
    pages: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None


class StepError(BaseModel):
    """What a Catch puts at `$.error`: Step Functions' {"Error", "Cause"} (Cause: often a Lambda error as JSON)."""

    model_config = ConfigDict(extra="allow")

    Error: str = "Unknown"
    Cause: Any = None


class FailStep(_Step):
    step: Literal["fail"]
    run: RunRef
    error: StepError = Field(default_factory=StepError)
    execution_arn: str | None = None


StepEvent = Annotated[
    BeginStep | PlanStep | ResumedStep | GateStep | ReleaseStep | FinishStep | FailStep,
    Field(discriminator="step"),
]
_ADAPTER: TypeAdapter[StepEvent] = TypeAdapter(StepEvent)
STEP_NAMES = ("begin", "plan", "seams", "imports", "tags", "removal_gate", "halt", "release_removals", "finish", "fail")


def parse_step(event: Any) -> StepEvent:
    """The step event as its model; InvalidStepInput naming the step and every field that is wrong."""
    try:
        return _ADAPTER.validate_python(event)
    except ValidationError as exc:
        step = event.get("step") if isinstance(event, dict) else None
        problems = _problems(exc, tagged=True)
        if step not in STEP_NAMES:
            problems = f"step must be one of {', '.join(STEP_NAMES)}, not {step!r}"
        raise InvalidStepInput(f"invalid full-sync {step or ''} step input: {problems}".replace("  ", " ")) from None


class PageItem(BaseModel):
    """One item of the Distributed Map (its ItemSelector): the run's ids and one page descriptor from Plan."""

    model_config = ConfigDict(extra="allow")

    integration_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    dry_run: bool = False
    #: {"page": n, ...} as plan.plan_pages wrote it (the page's key range or offset)
    page: dict[str, Any]

    @field_validator("page")
    @classmethod
    def _numbered(cls, page: dict[str, Any]) -> dict[str, Any]:
        number = page.get("page")
        if isinstance(number, bool) or not isinstance(number, int | str) or not str(number).isdigit():
            raise ValueError("must hold its page number as 'page'")
        return page

    @property
    def number(self) -> int:
        return int(self.page["page"])


def parse_page(event: Any) -> PageItem:
    """The page worker's event as its model; InvalidStepInput naming the field."""
    try:
        return PageItem.model_validate(event)
    except ValidationError as exc:
        problems = _problems(exc, tagged=False)
        raise InvalidStepInput(f"invalid full-sync page input: {problems}") from None


def _problems(exc: ValidationError, *, tagged: bool) -> str:
    """ "run.run_id: Field required; ..." (`tagged`: the union's first location is the step name, left out)."""
    found = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc[1:] if tagged else loc) or (loc[0] if loc else "event")
        found.append(f"{where}: {err['msg']}")
    return "; ".join(found)


# ---- step results (what the state machine's Choice states and the next call read) ---------------------------
class PlanResult(BaseModel):
    """Where Plan wrote the page descriptors: the Distributed Map reads `key` from the pages bucket."""

    bucket: str
    key: str
    pages: int


class GateResult(BaseModel):
    """RemovalGate's verdict: RemovalsAllowed halts the run on `halt`."""

    halt: bool
    would_halt: bool
    removals: int


class FailResult(BaseModel):
    status: Literal["failed"] = "failed"
    run_id: str
    error: dict[str, str]
