"""The pools at interpreter exit: their jobs finish (as with ``concurrent.futures``),
then their workers stop; Ctrl-C cancels. No pool starts workers once exit has begun.
"""

from __future__ import annotations

import sys
import threading
import traceback
import weakref
from typing import TYPE_CHECKING

from .._core._enums import CancelationReason

if TYPE_CHECKING:
    from ._supervisor import Supervisor

# The supervisors of pools started and not yet stopped, for the interpreter's exit (a
# running supervisor is held by its thread, so a dropped pool's one is still here).
live: weakref.WeakSet[Supervisor] = weakref.WeakSet()
# Set once the interpreter has begun to exit: no pool starts workers from then on.
_interpreter_exiting = False


def interpreter_exiting() -> bool:
    """Whether the interpreter has begun to exit (no pool starts workers then)."""
    return _interpreter_exiting


def _exiting_on_ctrl_c() -> bool:
    # The interpreter stores the exception that ended the main module before it exits.
    return isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)


def _stop_live_pools() -> None:
    """At interpreter exit: let the jobs of the pools still running finish, as
    ``concurrent.futures`` does, then stop their workers.

    A pool created with ``cancel_at_exit=True``, or every pool when the program ends
    because of Ctrl-C, cancels its jobs first (reason SIGNAL). Ctrl-C while we wait
    cancels what is left and kills the workers.
    """
    global _interpreter_exiting
    _interpreter_exiting = True
    for sup in list(live):
        try:
            if sup._settings.cancel_at_exit or _exiting_on_ctrl_c():
                sup.cancel_everything(CancelationReason.SIGNAL, "the interpreter is exiting")
            try:
                sup.shutdown(True, cancel_pending=False, cancel_running=False)
            except KeyboardInterrupt:
                sup.cancel_everything(CancelationReason.SIGNAL, "Ctrl-C at interpreter exit")
                sup.terminate("the pool was terminated: Ctrl-C at interpreter exit")
        except Exception:
            traceback.print_exc()


# Run by threading._shutdown(), before atexit's handlers and before the interpreter
# stops other threads, as concurrent.futures.process does: so the supervisor thread can
# still resolve the handles, and a submit() in an atexit handler finds the flag set.
threading._register_atexit(_stop_live_pools)  # type: ignore[attr-defined]
