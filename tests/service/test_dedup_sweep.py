"""The sweep of deduplication keys is armed by the first key stored, not only by later ones: a queue that
saw a single DEDUP produce forgets its key from storage once the window ends, with no further call."""

from __future__ import annotations

from querator.model import QueueOptions
from tests.service.conftest import Env
from tests.service.features import remembered_keys
from tests.support import run


def test_a_single_dedup_key_is_swept_when_its_window_ends(env: Env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("q", QueueOptions(dedup_window=1_000))
            await svc.produce("q", [b"x"], dedup=b"only")
            assert await remembered_keys(env, svc) == 1
            await env.advance(999)
            assert await remembered_keys(env, svc) == 1
            await env.advance(1)
            await env.settle(50)
            assert await remembered_keys(env, svc) == 0

    run(main())


def test_redrive_to_a_queue_deleted_before_it_runs_moves_nothing(env: Env) -> None:
    async def main() -> None:
        async with env.service() as svc:
            await svc.create_queue("dead")
            await svc.create_queue("other")
            await svc.produce("dead", [b"a", b"b"])
            moving = svc.redrive("dead", to="other")
            await svc.delete_queue("other")
            # The rounds run after the target is gone: nothing moved, nothing lost.
            assert await moving == 0
            assert (await svc.queue_stats("dead")).ready == 2

    run(main())
