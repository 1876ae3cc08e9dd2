"""Fixtures for the connector tests: a real iMIS simulator on loopback and stores talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.connectors.imis import ImisUserStore
from bridge.demo.simulator import (
    DEFAULT_PEOPLE_FILE,
    SimPerson,
    SimulatorState,
    create_simulator,
    load_people,
    simulator_state,
)
from bridge.settings import ImisSettings
from tests.support.servers import serve

SERVICE_USER = "bridge-service"
SERVICE_PASSWORD = "service-password1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Sim:
    url: str
    state: SimulatorState


@contextmanager
def running_simulator(people: Sequence[SimPerson] | None = None, **options: Any) -> Iterator[Sim]:
    app = create_simulator(people, **options)
    with serve(app) as url:
        yield Sim(url, simulator_state(app))


def imis_settings(**changes: Any) -> ImisSettings:
    """Settings for the simulator with the demo service account, quick timeouts."""
    values: dict[str, Any] = {
        "base_url": "simulator",
        "service_username": SERVICE_USER,
        "service_password": SERVICE_PASSWORD,
        "connect_timeout": 2.0,
        "timeout": 5.0,
    }
    values.update(changes)
    return ImisSettings(**values)


def demo_people() -> list[SimPerson]:
    return load_people(DEFAULT_PEOPLE_FILE)


@pytest.fixture(scope="session")
def shared_sim() -> Iterator[Sim]:
    with running_simulator() as running:
        yield running


@pytest.fixture
def sim(shared_sim: Sim) -> Iterator[Sim]:
    """The demo simulator, reset before and after the test (one server for the session)."""
    shared_sim.state.reset()
    yield shared_sim
    shared_sim.state.reset()


StoreFactory = Callable[..., ImisUserStore]


@pytest.fixture
async def make_store(sim: Sim) -> AsyncIterator[StoreFactory]:
    """``make_store(**settings_changes)`` -> a store on ``sim``, closed after the test."""
    stores: list[ImisUserStore] = []

    def make(*, base_url: str | None = None, **changes: Any) -> ImisUserStore:
        store = ImisUserStore(imis_settings(**changes), base_url=base_url or sim.url)
        store.backoff_base = 0.01
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture
def store(make_store: StoreFactory) -> ImisUserStore:
    return make_store()
