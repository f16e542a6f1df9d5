"""`config validate --online`: does Efficy's records export read the page size as `efficy.page_size_param`?

The contract gives two spellings (`page_size`, `pageSize`: contracts/efficy.md section 4) and the installation
sets its own default. A server reading the other spelling answers pages of its own size: the full sync then
fails at planning (PAGE_SIZE_IGNORED). One one-person page shows it before anyone starts a run."""

from __future__ import annotations

from typing import Any


def page_size_problems(efficy: Any, cfg: Any) -> tuple[list[Any], list[str]]:
    """(problems, notes) about `efficy.page_size_param`, from one read of a one-person page."""
    from efficy_sync.clients.errors import ApiError, EfficyBusinessError
    from efficy_sync.config import Problem

    try:
        efficy.list_persons_page(0, 1, ["K_CONTACT"], include_profiles=False)
    except EfficyBusinessError as exc:
        if exc.code == "PAGE_SIZE_IGNORED":
            found = repr(cfg.efficy.page_size_param)
            return [Problem("efficy.page_size_param", str(exc), found=found)], []
        return [], [f"efficy.page_size_param not checked: Efficy's records export could not be read ({exc})"]
    except ApiError as exc:
        return [], [f"efficy.page_size_param not checked: Efficy's records export could not be read ({exc})"]
    return [], []
