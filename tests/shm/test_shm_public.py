"""The public surface of ``cancelpool.shm``."""

from __future__ import annotations

import cancelpool.shm


def test_all_lists_each_public_name_once_sorted() -> None:
    names = cancelpool.shm.__all__
    assert isinstance(names, tuple)
    assert len(set(names)) == len(names)
    # isort order, as ruff keeps it: constants first, then classes.
    assert list(names) == sorted(names, key=lambda name: (not name.isupper(), name))
    # Identifiers only: pytest's assertion rewriting adds "@py_builtins" and the like
    # to modules of a distribution that registers a pytest plugin (ours does).
    public = {n for n in vars(cancelpool.shm) if n.isidentifier() and not n.startswith("_")}
    public -= {"annotations"}  # from __future__
    assert public == set(names)


def test_public_classes_carry_the_public_module() -> None:
    for name in cancelpool.shm.__all__:
        obj = getattr(cancelpool.shm, name)
        if isinstance(obj, type):
            assert obj.__module__ == "cancelpool.shm", name
