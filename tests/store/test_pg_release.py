"""A step's connection goes back to the pool after its statements ran: a connection that breaks right after
its last reply must not turn work that was applied into an error, and the next step must get a working
connection (the failover test once saw a QCOMPLETE answered -TRYAGAIN after its items were deleted).

asyncpg's release does not raise for a connection the server closed, so this passes with or without the
guard in `SqlShared.connection()`; it pins the behaviour, not that guard, and the failover failure's
cause is still not reproduced."""

from __future__ import annotations

import asyncio

import asyncpg

from querator.pg.backend import _keep_session
from querator.pg.partition import SqlShared
from tests.pg_fixtures import needs_postgres
from tests.support import run

pytestmark = needs_postgres


def test_a_connection_that_breaks_after_its_step_does_not_fail_the_step(pg_dsn: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, reset=_keep_session)
        admin = await asyncpg.connect(pg_dsn)
        try:
            # connection() uses the pool alone: no engine context is needed.
            shared = SqlShared(context=None, node="n", notify=False, channel="c")  # type: ignore[arg-type]
            shared.pool = pool
            await admin.execute("CREATE TABLE IF NOT EXISTS released (v int)")
            async with shared.connection() as conn:
                await conn.execute("INSERT INTO released VALUES (1)")  # committed: the step's work
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                await asyncio.sleep(0.2)  # the server has closed this step's connection
            assert await admin.fetchval("SELECT count(*) FROM released") == 1
            # The pool dropped the broken connection and serves the next step with a working one.
            async with shared.connection() as conn:
                assert await conn.fetchval("SELECT 1") == 1
        finally:
            await admin.close()
            await pool.close()

    run(main())
