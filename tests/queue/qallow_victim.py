"""An allowed task module that imports dangerous names (the allow-list attack suite).

``--allow 'qallow_victim:*'`` admits only the functions defined here and the names in
``__cancelpool_tasks__``; everything imported into the module must stay out of reach.
"""

from __future__ import annotations

import os
import subprocess
from os import system
from shutil import rmtree

from qtasks import record
from qtasks import record as exported_record

__cancelpool_tasks__ = ["exported_record"]

run = subprocess.run
NOT_A_FUNCTION = {"system": system}
_ = (os, rmtree, record, exported_record)  # imported names an attacker would like to call


async def hello(who: str) -> str:
    """The module's own task: the one thing the suite expects to run."""
    return f"hello {who}"


def _private_helper(path: str) -> None:
    """A private function: a leading underscore is never a task."""
    system(f"touch {path}")


class Shell:
    """A class: calling it is not running a function of the module."""

    def __init__(self, command: str) -> None:
        system(command)
