"""Helpers for tests on the emulator: load a state, read everything back exactly, write as the app."""

from __future__ import annotations

from typing import Any

from reconciler.model import State
from reconciler.snapshot import dumps_snapshot
from reconciler.store import FirestoreStore


class Live:
    def __init__(self, project: str) -> None:
        self.project = project
        self.source = f"firestore://{project}"
        self.store = FirestoreStore(self.source)

    @property
    def client(self) -> Any:
        return self.store.client()

    def load(self, state: State) -> None:
        self.store.create_all(state)

    def read(self, collections=None) -> State:
        return FirestoreStore(self.source).read(collections)

    def dump(self) -> str:
        """Every document with its update time, as exact text: equal dumps mean nothing changed."""
        state = self.read()
        return dumps_snapshot(State(source="", read_time=None, collections=state.collections))
