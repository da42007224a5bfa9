"""Suite-wide collection order: files holding slow cases run first.

``make test`` spreads whole files over one xdist worker per core (``--dist loadfile``); the scheduler hands
out files in collection order, so a long file collected last (the local DAG run) would leave the other
workers idle at the end. Within a file the order is unchanged.
"""

from __future__ import annotations


def pytest_collection_modifyitems(session, config, items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: only moves whole slow files forward
