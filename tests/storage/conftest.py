"""The storage suite runs on a database of its own, once per reachable backend.

SQLite always; PostgreSQL too when ``BRIDGE_TEST_DATABASE_URL`` is set, so CI
proves the one conformance suite on both.

It stores rows that only make sense to the repository (e.g. registrations whose
options no profile would accept); keeping them out of the shared
``database_url`` means no other test ever lists them.
"""

from __future__ import annotations

import pytest

from tests.conftest import DatabaseFactory

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="package", params=BACKENDS)
def storage_backend(request: pytest.FixtureRequest, database_factory: DatabaseFactory) -> str:
    backend: str = request.param
    if backend not in database_factory.backends:
        pytest.skip("PostgreSQL: set BRIDGE_TEST_DATABASE_URL to run the suite on it too")
    return backend


@pytest.fixture
def empty_database_url(database_factory: DatabaseFactory, storage_backend: str) -> str:
    return database_factory.new_url(storage_backend)


@pytest.fixture(scope="package")
def database_url(database_factory: DatabaseFactory, storage_backend: str) -> str:
    return database_factory.migrated_url(storage_backend)
