"""Two integrations loaded the same Efficy into two sections of one APSIS One account, one with
`on_condition_lost: delete`: a person leaving its audience had the profile deleted, which APSIS One does for the
whole account, so the other integration's attributes, consents and tags went with it while its states said they
were there (it sent nothing again). `config apply` (the CLI, as a subprocess) now refuses the pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

SECOND = "usercreated.sections.second-b2"


def test_a_delete_mode_beside_another_section_of_the_same_persons_is_refused(stack: Stack, tmp_path: Path) -> None:
    a = stack.create_integration(tmp_path, on_condition_lost="delete")
    data = yaml.safe_load((tmp_path / f"{a}.yaml").read_text())
    data["integration_id"] = f"{a}-b"
    data["on_condition_lost"] = "leave"
    data["apsis"]["section"] = SECOND
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    done = stack.cli("config", "apply", str(path), "--by", "tests")

    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nothing stored" in done.stderr and f"{a}'s on_condition_lost is delete" in done.stderr, done.stderr
    shown = stack.cli("config", "show", f"{a}-b")
    assert shown.returncode != 0  # not stored
