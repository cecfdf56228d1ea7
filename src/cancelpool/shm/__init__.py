"""Cross-process cancellation tokens in shared memory.

:class:`TokenTable` holds one slot per job in anonymous shared memory, written by the
supervisor and read by every worker; :class:`SharedToken` is a cancellation token
backed by a slot; :class:`Doorbell` wakes a worker's event loop so that it looks.
"""

from __future__ import annotations

from ._doorbell import Doorbell as Doorbell
from ._table import MAX_CAPACITY as MAX_CAPACITY
from ._table import SlotRef as SlotRef
from ._table import TableFull as TableFull
from ._table import TokenTable as TokenTable
from ._token import SharedToken as SharedToken

__all__ = (
    "MAX_CAPACITY",
    "Doorbell",
    "SharedToken",
    "SlotRef",
    "TableFull",
    "TokenTable",
)
