"""The storage suite runs on a database of its own (same backend as the rest of the run).

It stores rows that only make sense to the repository (e.g. registrations whose
options no profile would accept); keeping them out of the shared
``database_url`` means no other test ever lists them.
"""

from __future__ import annotations

import pytest

from bridge.storage import Database
from tests.conftest import DatabaseFactory


@pytest.fixture(scope="package")
def database_url(database_factory: DatabaseFactory) -> str:
    url = database_factory.new_url()
    with Database(url) as database:
        database.upgrade()
    return url
