"""asyncpg against psycopg 3 (async, with psycopg_pool) on the batch shapes a queue engine sends to
PostgreSQL, each shape one transaction, on a throwaway cluster with fsync and synchronous_commit on.

    python -m bench.pg_drivers [--quick] [--rounds R] [--duration S] [--concurrency C] [--json PATH]

Shapes: insert a batch of 100 and of 1 rows (executemany, one `INSERT ... SELECT FROM unnest(...)`, COPY);
lease n = 1 and 100 (`WITH c AS (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING`); complete a
batch of 100 and 1 (`DELETE ... WHERE id = ANY($1)`); and a whole partition step (insert 100 + complete
100 + one stats row) as one transaction, written the way each driver does it best. For each shape: the
round trips one transaction costs (counted by a TCP relay that sees every client flight), transactions/s
and items/s with C connections working at once, the median latency and this process's CPU per
transaction, each the median of R rounds in which the drivers take turns. The figures and the choice are
in docs/adr/0012-postgres-driver.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import run_async
from bench.pgcluster import HOST, PgCluster

SCHEMA = """
DROP TABLE IF EXISTS items, stats;
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lease_deadline timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    kind text NOT NULL DEFAULT '',
    payload bytea NOT NULL
);
-- Only ready rows: the lease scan skips what is leased without reading it.
CREATE INDEX items_ready ON items (id) WHERE lease_deadline IS NULL;
CREATE TABLE stats (node text NOT NULL, batch bigint NOT NULL, produced bigint NOT NULL,
                    completed bigint NOT NULL, PRIMARY KEY (node, batch));
"""

INSERT_ONE = "INSERT INTO items (payload, kind) VALUES ($1, $2)"
INSERT_UNNEST = "INSERT INTO items (payload, kind) SELECT * FROM unnest($1::bytea[], $2::text[])"
LEASE = """
WITH c AS (
    SELECT id FROM items WHERE lease_deadline IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE items AS t SET lease_deadline = now() + interval '60 seconds', attempts = t.attempts + 1
FROM c WHERE t.id = c.id
RETURNING t.id, t.payload, t.attempts, t.lease_deadline
"""
COMPLETE = "DELETE FROM items WHERE id = ANY($1::bigint[])"
STATS_ROW = "INSERT INTO stats (node, batch, produced, completed) VALUES ($1, $2, $3, $4)"
# A whole partition step as one statement: data-modifying CTEs all run in the statement's one transaction.
STEP_ONE_STATEMENT = """
WITH ins AS (
    INSERT INTO items (payload, kind) SELECT * FROM unnest($1::bytea[], $2::text[]) RETURNING id
), del AS (
    DELETE FROM items WHERE id = ANY($3::bigint[]) RETURNING id
)
INSERT INTO stats (node, batch, produced, completed)
SELECT $4, $5, (SELECT count(*) FROM ins), (SELECT count(*) FROM del)
"""
FILL = "INSERT INTO items (payload, kind) SELECT '\\x7878787878787878'::bytea, '' FROM generate_series(1, $1)"
LEASE_ALL = "UPDATE items SET lease_deadline = now() + interval '1 hour' RETURNING id"

PAYLOAD = b"x" * 16


def psycopg_sql(sql: str) -> str:
    """The same statement with psycopg's placeholders ($1 -> %s; every statement here uses each in order)."""
    out = sql
    for i in range(9, 0, -1):
        out = out.replace(f"${i}", "%s")
    return out


# -- counting round trips ------------------------------------------------------------------------------


class FlightCounter:
    """A TCP relay in front of PostgreSQL that counts client flights: bytes from the client after the server
    last spoke. One flight = one round trip the client waited for."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flights = 0
        self._server_spoke_last = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection(HOST, self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if from_client and self._server_spoke_last:
                        self.flights += 1
                    self._server_spoke_last = not from_client
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(creader, swriter, True), pump(sreader, cwriter, False))

    async def measure(self, op: Callable[[], Awaitable[Any]]) -> int:
        await op()  # the first call may prepare statements; count the steady state
        self.flights = 0
        self._server_spoke_last = True
        await op()
        return self.flights

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- the two drivers behind one small interface -----------------------------------------------------------


class Feed:
    """Rows to insert and ids to complete, shared by the concurrent workers of one shape."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.batch = 0

    def rows(self, n: int) -> tuple[list[bytes], list[str]]:
        return [PAYLOAD] * n, [""] * n

    def take_ids(self, n: int) -> list[int]:
        taken = self.ids[-n:]
        del self.ids[-n:]
        return taken

    def next_batch(self) -> int:
        self.batch += 1
        return self.batch


Op = Callable[[Any, Feed], Awaitable[int]]


class Driver:
    """One driver: a pool of connections, one extra connection (for counting round trips), and each shape
    written the way this driver does it best. Every shape method is one transaction and returns the items
    it handled."""

    name = ""
    step_name = "step: BEGIN + 3 statements + COMMIT"

    async def open(self, dsn: str, size: int) -> None:
        raise NotImplementedError

    async def connect_one(self, dsn: str) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def insert_many(self, conn: Any, feed: Feed, n: int) -> int:
        raise NotImplementedError

    async def insert_unnest(self, conn: Any, feed: Feed, n: int) -> int:
        raise NotImplementedError

    async def insert_copy(self, conn: Any, feed: Feed, n: int) -> int:
        raise NotImplementedError

    async def lease(self, conn: Any, feed: Feed, n: int) -> int:
        raise NotImplementedError

    async def complete(self, conn: Any, feed: Feed, n: int) -> int:
        raise NotImplementedError

    async def step_statements(self, conn: Any, feed: Feed) -> int:
        """Insert 100, complete 100 and write a stats row as three statements in one transaction."""
        raise NotImplementedError

    async def step_one_statement(self, conn: Any, feed: Feed) -> int:
        """The same step as one statement (data-modifying CTEs share the statement's transaction)."""
        raise NotImplementedError

    def shapes(self) -> dict[str, Op]:
        def sized(method: Callable[[Any, Feed, int], Awaitable[int]], n: int) -> Op:
            return lambda conn, feed: method(conn, feed, n)

        table: dict[str, Op] = {}
        for n in (100, 1):
            table[f"insert {n}: executemany"] = sized(self.insert_many, n)
            table[f"insert {n}: unnest"] = sized(self.insert_unnest, n)
            table[f"insert {n}: COPY"] = sized(self.insert_copy, n)
        for verb, method in (("lease", self.lease), ("complete", self.complete)):
            for n in (1, 100):
                table[f"{verb} {n}"] = sized(method, n)
        table[self.step_name] = self.step_statements
        table["step: one statement (CTEs)"] = self.step_one_statement
        return table


def deleted(status: str) -> int:
    """Rows a `DELETE n` command tag reports."""
    return int(status.split()[-1])


class Asyncpg(Driver):
    name = "asyncpg"

    async def open(self, dsn: str, size: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)

    async def connect_one(self, dsn: str) -> Any:
        import asyncpg

        return await asyncpg.connect(dsn)

    async def close(self) -> None:
        await self.pool.close()

    def conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.acquire()  # type: ignore[no-any-return]

    async def insert_many(self, conn: Any, feed: Feed, n: int) -> int:
        # Atomic since asyncpg 0.22: one implicit transaction, one Sync for the whole batch.
        await conn.executemany(INSERT_ONE, list(zip(*feed.rows(n), strict=True)))
        return n

    async def insert_unnest(self, conn: Any, feed: Feed, n: int) -> int:
        await conn.execute(INSERT_UNNEST, *feed.rows(n))
        return n

    async def insert_copy(self, conn: Any, feed: Feed, n: int) -> int:
        records = list(zip(*feed.rows(n), strict=True))
        await conn.copy_records_to_table("items", records=records, columns=["payload", "kind"])
        return n

    async def lease(self, conn: Any, feed: Feed, n: int) -> int:
        return len(await conn.fetch(LEASE, n))

    async def complete(self, conn: Any, feed: Feed, n: int) -> int:
        return deleted(await conn.execute(COMPLETE, feed.take_ids(n)))

    async def step_statements(self, conn: Any, feed: Feed) -> int:
        # asyncpg waits for each statement's reply before it sends the next, BEGIN and COMMIT included.
        async with conn.transaction():
            await conn.execute(INSERT_UNNEST, *feed.rows(100))
            done = deleted(await conn.execute(COMPLETE, feed.take_ids(100)))
            await conn.execute(STATS_ROW, "n1", feed.next_batch(), 100, done)
        return 100 + done

    async def step_one_statement(self, conn: Any, feed: Feed) -> int:
        payloads, kinds = feed.rows(100)
        await conn.execute(STEP_ONE_STATEMENT, payloads, kinds, feed.take_ids(100), "n1", feed.next_batch())
        return 200


class Psycopg(Driver):
    name = "psycopg"
    step_name = "step: pipeline BEGIN + 3 statements + COMMIT"

    async def open(self, dsn: str, size: int) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
        )
        await self.pool.open(wait=True)

    async def connect_one(self, dsn: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def close(self) -> None:
        await self.pool.close()

    def conn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.connection()

    async def insert_many(self, conn: Any, feed: Feed, n: int) -> int:
        # executemany pipelines its statements; the transaction makes the batch atomic.
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(psycopg_sql(INSERT_ONE), list(zip(*feed.rows(n), strict=True)))
        return n

    async def insert_unnest(self, conn: Any, feed: Feed, n: int) -> int:
        await conn.execute(psycopg_sql(INSERT_UNNEST), feed.rows(n))
        return n

    async def insert_copy(self, conn: Any, feed: Feed, n: int) -> int:
        async with conn.cursor() as cur, cur.copy("COPY items (payload, kind) FROM STDIN") as copy:
            for row in zip(*feed.rows(n), strict=True):
                await copy.write_row(row)
        return n

    async def lease(self, conn: Any, feed: Feed, n: int) -> int:
        cur = await conn.execute(psycopg_sql(LEASE), (n,))
        return len(await cur.fetchall())

    async def complete(self, conn: Any, feed: Feed, n: int) -> int:
        cur = await conn.execute(psycopg_sql(COMPLETE), (feed.take_ids(n),))
        return int(cur.rowcount)

    async def step_statements(self, conn: Any, feed: Feed) -> int:
        # Pipeline mode sends BEGIN, the statements and COMMIT without waiting between them; the stats row
        # carries the count asked for, since one computed from a reply would force a wait.
        ids = feed.take_ids(100)
        async with conn.pipeline(), conn.transaction():
            await conn.execute(psycopg_sql(INSERT_UNNEST), feed.rows(100))
            cur = await conn.execute(psycopg_sql(COMPLETE), (ids,))
            await conn.execute(psycopg_sql(STATS_ROW), ("n1", feed.next_batch(), 100, len(ids)))
        return 100 + max(cur.rowcount, 0)

    async def step_one_statement(self, conn: Any, feed: Feed) -> int:
        payloads, kinds = feed.rows(100)
        params = (payloads, kinds, feed.take_ids(100), "n1", feed.next_batch())
        await conn.execute(psycopg_sql(STEP_ONE_STATEMENT), params)
        return 200


DRIVERS: dict[str, Callable[[], Driver]] = {"asyncpg": Asyncpg, "psycopg": Psycopg}


# -- measuring -------------------------------------------------------------------------------------------


@dataclass
class ShapeResult:
    driver: str
    shape: str
    round_trips: int
    transactions: int
    items: int
    seconds: float
    tx_per_s: float
    items_per_s: float
    p50_ms: float
    # This process's CPU per transaction (driver + the loop driving it): what a busy node pays per step,
    # and steadier than tx/s on a shared machine.
    cpu_us_per_tx: float
    errors: list[str] = field(default_factory=list)


async def prepare(dsn: str, shape: str, items_needed: int) -> Feed:
    """A fresh table holding what the shape consumes: ready rows to lease, leased rows to complete."""
    import asyncpg

    feed = Feed()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        if shape.startswith(("lease", "complete", "step")):
            await conn.execute(FILL, items_needed)
            if shape.startswith(("complete", "step")):
                feed.ids = [r["id"] for r in await conn.fetch(LEASE_ALL)]
                feed.ids.reverse()  # take_ids pops from the end: complete in id order
            # Fresh statistics and no dead tuples from the fill, so the plans are those of a steady queue.
            await conn.execute("VACUUM ANALYZE items")
    finally:
        await conn.close()
    return feed


async def measure_shape(
    driver: Driver,
    dsn: str,
    shape: str,
    op: Op,
    *,
    concurrency: int,
    duration: float,
    items_needed: int,
) -> ShapeResult:
    feed = await prepare(dsn, shape, items_needed)
    counter = FlightCounter(int(dsn.rsplit(":", 1)[1].split("/")[0]))
    await counter.start()
    single = await driver.connect_one(dsn.replace(f":{counter.target_port}/", f":{counter.port}/"))
    try:
        round_trips = await counter.measure(lambda: op(single, feed))
    finally:
        await single.close()
        await counter.close()
    latencies: list[float] = []
    items = 0
    errors: list[str] = []
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal items
        async with driver.conn() as conn:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                got = await op(conn, feed)
                latencies.append(time.perf_counter() - t0)
                items += got
                if got == 0:
                    errors.append(f"{shape}: ran out of rows; raise the fill")
                    return

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return ShapeResult(
        driver=driver.name,
        shape=shape,
        round_trips=round_trips,
        transactions=len(latencies),
        items=items,
        seconds=round(seconds, 3),
        tx_per_s=len(latencies) / seconds,
        items_per_s=items / seconds,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        cpu_us_per_tx=cpu / max(len(latencies), 1) * 1e6,
        errors=sorted(set(errors)),
    )


async def run_all(
    dsn: str,
    drivers: Sequence[str],
    *,
    concurrency: int,
    duration: float,
    items_needed: int,
    rounds: int = 1,
    only: Sequence[str] = (),
) -> list[ShapeResult]:
    """Every shape on every driver, `rounds` times. The drivers take turns shape by shape, and which goes
    first alternates by round, so drift on this shared machine hits both alike (as bench/run.py does).
    Per driver and shape: the median of the rounds."""
    opened: list[Driver] = []
    runs: dict[tuple[str, str], list[ShapeResult]] = {}
    try:
        for name in drivers:
            driver = DRIVERS[name]()
            await driver.open(dsn, concurrency)
            opened.append(driver)
        shapes = {d.name: d.shapes() for d in opened}
        names = list(dict.fromkeys(shape for d in opened for shape in shapes[d.name]))
        names = [n for n in names if not only or any(word in n for word in only)]
        for round_no in range(rounds):
            for shape in names:
                order = opened if round_no % 2 == 0 else opened[::-1]
                for driver in order:
                    op = shapes[driver.name].get(shape)
                    if op is None:
                        continue
                    r = await measure_shape(
                        driver,
                        dsn,
                        shape,
                        op,
                        concurrency=concurrency,
                        duration=duration,
                        items_needed=items_needed,
                    )
                    print(
                        f"round {round_no + 1} {r.driver:8} {r.shape:46} {r.round_trips:3} RT "
                        f"{r.tx_per_s:8.0f} tx/s {r.items_per_s:9.0f} items/s  p50 {r.p50_ms:6.2f} ms "
                        f"cpu {r.cpu_us_per_tx:6.0f} us/tx",
                        file=sys.stderr,
                    )
                    runs.setdefault((driver.name, shape), []).append(r)
    finally:
        for driver in opened:
            await driver.close()
    return [median_of(rs) for rs in runs.values()]


def median_of(rounds: list[ShapeResult]) -> ShapeResult:
    first = rounds[0]
    return ShapeResult(
        driver=first.driver,
        shape=first.shape,
        round_trips=max(r.round_trips for r in rounds),
        transactions=sum(r.transactions for r in rounds),
        items=sum(r.items for r in rounds),
        seconds=round(sum(r.seconds for r in rounds), 3),
        tx_per_s=statistics.median(r.tx_per_s for r in rounds),
        items_per_s=statistics.median(r.items_per_s for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        cpu_us_per_tx=statistics.median(r.cpu_us_per_tx for r in rounds),
        errors=sorted({e for r in rounds for e in r.errors}),
    )


def table(results: list[ShapeResult]) -> str:
    lines = [
        "| shape | driver | round trips | tx/s | items/s | p50 ms | client CPU µs/tx |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: (r.shape.split(":")[0], r.shape, r.driver)):
        figures = f"{r.round_trips} | {r.tx_per_s:,.0f} | {r.items_per_s:,.0f} | {r.p50_ms:.2f}"
        figures += f" | {r.cpu_us_per_tx:,.0f}"
        lines.append(f"| {r.shape} | {r.driver} | {figures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_drivers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 0.4 s per shape (a smoke run)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per shape and round (default 1)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="connections working at once")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per shape and driver (default 3)")
    parser.add_argument("--drivers", nargs="+", choices=sorted(DRIVERS), default=sorted(DRIVERS))
    parser.add_argument("--only", nargs="*", default=[], help="shapes whose name contains one of these words")
    parser.add_argument("--dsn", help="an existing database to use (its tables items and stats are dropped)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    duration = args.duration or (0.4 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 3)
    # Enough ready rows that no lease or complete shape runs dry within its duration.
    items_needed = 40_000 if args.quick else 300_000

    async def go(dsn: str) -> list[ShapeResult]:
        return await run_all(
            dsn,
            args.drivers,
            concurrency=args.concurrency,
            duration=duration,
            items_needed=items_needed,
            rounds=rounds,
            only=args.only,
        )

    if args.dsn:
        results = run_async(go(args.dsn))
        server = "given DSN"
    else:
        with PgCluster() as pg:
            results = run_async(go(pg.create_database("drivers")))
            server = f"throwaway cluster ({pg.bindir})"
    print(table(results))
    errors = [e for r in results for e in r.errors]
    for e in errors:
        print(f"problem: {e}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "server": server,
                    "concurrency": args.concurrency,
                    "duration": duration,
                    "rounds": rounds,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
