"""What the memory tests compare with: a function's MemorySize as template.yaml gives it (its own, or the
Globals'), and the peak RSS of a subprocess (VmHWM: ru_maxrss would carry the pytest parent's peak over exec)."""

from __future__ import annotations

import yaml

from tests.support import ROOT

#: the first lines of a measuring subprocess's script: `hwm()` is its peak RSS in kB so far
HWM = """
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
"""


class _Loader(yaml.SafeLoader):
    """template.yaml's intrinsic functions (!Ref, !Sub ...) read as None: only literal settings are needed."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def memory_of(function: str) -> int:
    """The function's MemorySize in MB."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    props = template["Resources"][function]["Properties"]
    return int(props.get("MemorySize") or template["Globals"]["Function"]["MemorySize"])
