"""Suite-wide collection order: the long poles first, then files holding slow cases, then the rest.

``make test`` spreads whole files over one xdist worker per core (``--dist loadfile``) and the scheduler
hands files out in collection order, so a long file collected late (the local DAG run: about 3 minutes on
2 cores, a third of the suite) would run alone at the end while the other workers sit idle.
Within a file the order is unchanged.
"""

from __future__ import annotations

# The files that take longest on 2 cores (pytest --durations), longest first.
LONG_POLES = ("pipelines/test_local_run.py", "pipelines/test_imported_release_dag.py", "components/test_distill.py")


def _rank(item, slow_files) -> int:
    path = item.path.as_posix()
    for i, tail in enumerate(LONG_POLES):
        if path.endswith(tail):
            return i
    return len(LONG_POLES) + (item.path not in slow_files)


def pytest_collection_modifyitems(session, config, items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _rank(item, slow_files))  # stable: whole files move, in-file order kept
