"""The memory store with many keys (issue 26): what it forgets costs amortized O(1)
per permit, however many endpoints it paces."""

from __future__ import annotations

from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import memory
from requests_bloxs_errors.storage.memory import MemoryBackend

ENTRY = "https://api.example:443|GET /api/rest/v4/entry/"


def test_11_memory_cleanup_costs_amortized_o1_per_permit_past_10000_keys(monkeypatch):
    # every log a sweep looks at is counted; a sweep of every log for every new key
    # (what 10,000 keys and more cost before) fails at once instead of taking minutes
    permits = 0
    examined = 0
    looked_at = memory._Permits.idle

    def idle(self: memory._Permits, now: float) -> bool:
        nonlocal examined
        examined += 1
        assert examined <= 4 * permits + 100, f"{examined} logs examined for {permits} permits"
        return looked_at(self, now)

    monkeypatch.setattr(memory._Permits, "idle", idle)
    clock = FakeClock()
    store = MemoryBackend(clock=clock)
    for n in range(20_000):  # each key busy for the whole run: none can be forgotten
        permits += 1
        grant = store.acquire(f"{ENTRY}{n}", (5, 600.0), 60)
        store.finish(f"{ENTRY}{n}", grant.stamp)
    assert examined > 0  # the store did sweep
    assert len(store.held()["permits"]) == 20_000
    clock.advance(1200)  # every one of them has ended a period ago
    for n in range(20_000, 40_000):
        permits += 1
        grant = store.acquire(f"{ENTRY}{n}", (5, 600.0), 60)
        store.finish(f"{ENTRY}{n}", grant.stamp)
    kept = store.held()["permits"]
    assert f"{ENTRY}0" not in kept  # what ended is still forgotten
    assert len(kept) <= 20_000


def test_memory_forgets_what_a_sweep_kept_once_it_has_ended():
    clock = FakeClock()
    store = MemoryBackend(clock=clock)
    for n in range(1000):
        store.pause(f"{ENTRY}{n}", 100.0)
    clock.advance(61)
    assert store.paused_for(f"{ENTRY}0") > 0  # a sweep, which keeps the 1,000 pauses
    clock.advance(100)  # now they have ended
    for n in range(1000):  # as much work again as the sweep kept: the next one is due
        assert store.paused_for(f"{ENTRY}{n}") == 0
    assert store.held()["pauses"] == set()
