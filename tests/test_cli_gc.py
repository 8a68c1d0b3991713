"""`querator serve` makes the cyclic garbage collector run less often (see `querator.cli.tune_gc`)."""

from __future__ import annotations

import gc

from querator.cli import GC_GEN0_THRESHOLD, tune_gc


def test_tune_gc_raises_the_gen0_threshold_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > frozen_before
        # Objects made after the freeze are still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
