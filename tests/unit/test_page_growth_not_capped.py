"""A person created in Efficy while the full sync read its last (short) page: the probe right after the last
record answered found the new person, the page was read again and answered one more person than the first time,
still short, and the page failed PAGE_SIZE_CAPPED ("set efficy.page_size to 30 or less") though the connector
caps nothing: the CRM grew. A capped connector answers the same short count twice; a page that answers more the
second time is growth, probed again."""

from __future__ import annotations

from typing import Any

from efficy_sync.fullsync.page import efficy_pages


class GrowingCrm:
    """An export in K_CONTACT order of `persons` persons; `grow_after_read` new persons (larger keys) are created
    right after the first read of a page of `size` (an Efficy import or a user creating contacts meanwhile)."""

    def __init__(self, persons: int, size: int) -> None:
        self.keys = list(range(1, persons + 1))
        self.size = size
        self.grown = False

    def list_persons_page(
        self, page: int, page_size: int, fields: Any = None, include_profiles: bool = True, **_: Any
    ) -> list[dict[str, Any]]:
        start = page * page_size
        answer = [{"K_CONTACT": k} for k in self.keys[start : start + page_size]]
        if page_size == self.size and not self.grown:
            self.grown = True
            self.keys.append(self.keys[-1] + 1)  # a contact created just after this read
        return answer


def test_a_person_created_during_the_last_short_page_is_not_a_capped_connector() -> None:
    crm = GrowingCrm(persons=130, size=100)  # page 1 holds 30 persons when it is read
    descriptor = {"first": 1, "pages": 1, "page_size": 100, "tail": True}
    pages = list(efficy_pages(crm, descriptor, ["K_CONTACT"]))
    keys = [r["K_CONTACT"] for page in pages for r in page]
    assert keys[:30] == list(range(101, 131))
