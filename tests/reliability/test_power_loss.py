"""A quick power-loss run per durability mode: `bench.power_loss` with 3 cuts each (about 20 s a mode).

`fsync` must keep the whole contract through power cuts: nothing acknowledged lost, nothing completed
resurrected, every queue still there, every acknowledged DEDUP key remembered with its first call's ids.
`flush` may lose acknowledged work (items and DEDUP keys), but only about the last `flush-sync-ms` of it
(the background sync), and never a queue (admin changes are synced in every mode).
`make power-loss` is the long version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import RunConfig
from bench.lazyfs import unavailable
from bench.power_loss import lost_window, run

REASON = unavailable()
CUTS = 3
FLUSH_SYNC_S = 1.0  # the server's default flush-sync-ms
# What a loss may be older than the sync period: one sync on the FUSE filesystem, and a loaded machine's
# scheduling of the timer that starts it.
SYNC_SLACK_S = 1.0


def test_lost_window_is_the_age_of_the_oldest_loss_at_the_cut_that_lost_it() -> None:
    assert lost_window([], [10.0]) == 0.0
    assert lost_window([(8.9, 9.0), (9.4, 9.5), (10.9, 11.0)], [10.0, 12.0]) == pytest.approx(1.0)
    # Invoked before the cut at 10, its reply read just after it: that cut lost it, aged 0.
    assert lost_window([(9.99, 10.01)], [10.0, 12.0]) == 0.0
    assert lost_window([(12.9, 13.0)], [10.0, 12.0]) == 0.0  # lost without a later cut: not a power loss


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.skipif(REASON is not None, reason=f"no FUSE here: {REASON}")
def test_fsync_loses_nothing_acknowledged_through_power_cuts(tmp_path: Path) -> None:
    result = run(RunConfig(durability="fsync", kills=CUTS, seed=11), tmp_path / "fsync", verbose=False)
    c = result.run.check
    detail = f"{result.summary()}\n{result.run.details()}\n{c.examples}\n{result.run.worker_errors}"
    assert len(result.cuts) == CUTS
    assert c.lost == 0 and c.redelivered_after_complete == 0, detail
    assert c.violations() == {} and not result.run.worker_errors, detail
    assert result.queue_survival.missing == [] and result.queue_survival.checked >= CUTS, detail
    # Every acknowledged DEDUP call, repeated after every later cut, returned its ids and stored nothing.
    d = result.dedup
    assert (d.forgotten, d.different, d.unexplained) == ([], [], []), detail
    assert d.checked >= CUTS and d.produced >= CUTS, detail
    assert result.contract_kept, detail
    assert result.run.counters_match(), detail
    assert c.acknowledged >= 500, "too little work to prove anything\n" + detail
    assert c.dead_acked > 0 and c.redriven_acked > 0, detail  # the dead queue took part
    # The cuts dropped something: there was unsynced data to lose, and none of it was acknowledged.
    assert sum(r.files for r in result.cuts) > 0, detail


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.skipif(REASON is not None, reason=f"no FUSE here: {REASON}")
def test_flush_mode_loses_at_most_the_last_sync_period_and_never_a_queue(tmp_path: Path) -> None:
    result = run(RunConfig(durability="flush", kills=CUTS, seed=11), tmp_path / "flush", verbose=False)
    c = result.run.check
    detail = f"{result.summary()}\n{result.run.details()}"
    assert len(result.cuts) == CUTS and not result.run.worker_errors, detail
    assert c.acknowledged >= 500, "too little work to prove anything\n" + detail
    # What is reported is what the checker found: the produce times of each lost item, and a window
    # only when something was lost (0 is possible even then: a reply read just after its cut).
    assert len(c.lost_produce_mono) == c.lost, detail
    assert result.lost_window_s >= 0 and (c.lost > 0 or result.lost_window_s == 0), detail
    assert f"{c.lost:,} of {c.acknowledged:,} acknowledged items lost" in result.summary()
    # The bounds: no queue lost, and nothing acknowledged longer ago than about one sync period.
    assert result.queue_survival.missing == [] and result.queue_survival.checked >= CUTS, detail
    assert result.lost_window_s <= FLUSH_SYNC_S + SYNC_SLACK_S, detail
    # DEDUP keys: forgetting is reported, but not of a call acknowledged (its reply read, so at least
    # that long before its cut) more than about one sync period before the cut.
    assert result.dedup.checked >= CUTS, detail
    assert f"dedup keys forgotten after a cut {len(result.dedup.forgotten)}," in result.summary()
    assert result.dedup.forgotten_window_s <= FLUSH_SYNC_S + SYNC_SLACK_S, detail
    # Completes and leases of that last period may be lost too (an item then comes back, or is leased
    # again while its first holder still works on it): that is what `flush` trades for its speed.
