"""INFO's Commandstats / Errorstats / Keyspace / per-queue lines, SLOWLOG and CLIENT KILL / LIST, through
one fake-transport connection (no socket): exact counts after a known sequence of commands."""

from __future__ import annotations

from tests.commands.harness import Wire, connected
from tests.support import resp, run


def info_fields(reply: bytes) -> dict[str, str]:
    body = reply.split(b"\r\n", 1)[1].decode()
    return dict(line.split(":", 1) for line in body.split("\r\n") if line and not line.startswith("#"))


async def info(wire: Wire, *sections: bytes) -> dict[str, str]:
    return info_fields(await wire.send(resp(b"INFO", *sections)))


def test_commandstats_count_calls_failures_and_rejections() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            assert await wire.call(b"QCREATE jobs") == b"+OK\r\n"
            await wire.call(b"QPRODUCE jobs ITEMS a b")
            assert (await wire.call(b"QCREATE jobs")).startswith(b"-EXISTS")  # ran, failed
            assert (await wire.call(b"QLEASE")).startswith(b"-ERR wrong number")  # rejected
            assert (await wire.call(b"QINFO nope")).startswith(b"-NOQUEUE")  # failed (deferred)
            assert (await wire.call(b"NOSUCH")).startswith(b"-ERR unknown command")  # no cmdstat
            fields = await info(wire, b"commandstats", b"errorstats", b"stats")
            assert fields["cmdstat_qcreate"].startswith("calls=2,usec=")
            assert fields["cmdstat_qcreate"].endswith(",rejected_calls=0,failed_calls=1")
            assert fields["cmdstat_qproduce"].endswith(",rejected_calls=0,failed_calls=0")
            assert fields["cmdstat_qlease"] == (
                "calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0"
            )
            assert fields["cmdstat_qinfo"].endswith(",rejected_calls=0,failed_calls=1")
            assert "cmdstat_nosuch" not in fields
            assert fields["errorstat_ERR"] == "count=2"
            assert fields["errorstat_EXISTS"] == "count=1"
            assert fields["errorstat_NOQUEUE"] == "count=1"
            assert fields["total_error_replies"] == "4"

    run(scenario())


def test_subcommands_are_counted_under_their_full_name() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            await wire.call(b"CLIENT ID")
            fields = await info(wire, b"commandstats")
            assert fields["cmdstat_client|id"].startswith("calls=1,")

    run(scenario())


def test_info_default_has_memory_keyspace_and_queue_lines_but_not_commandstats() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            await wire.call(b"QCREATE jobs")
            await wire.call(b"QCREATE a:b")
            await wire.call(b"QPRODUCE jobs ITEMS x y z")
            await wire.call(b"QLEASE jobs")
            reply = await wire.send(resp(b"INFO"))
            text = reply.decode()
            for header in ("# Memory", "# Errorstats", "# Keyspace", "# Queues"):
                assert header in text
            assert "# Commandstats" not in text
            fields = info_fields(reply)
            assert int(fields["used_memory"]) > 0
            assert int(fields["used_memory_rss"]) >= int(fields["used_memory"])
            assert fields["instantaneous_ops_per_sec"] == "0"
            assert fields["db0"] == "keys=2,expires=0,avg_ttl=0"
            assert fields["queue_jobs"] == (
                "ready=2,leased=1,scheduled=0,produced=3,completed=0,retried=0,lease_expired=0,"
                "dead_lettered=0,oldest_ready_age_ms=0,waiting_consumers=0"
            )
            assert "queue_a%3Ab" in fields
            assert "# Commandstats" in (await wire.send(resp(b"INFO", b"all"))).decode()

    run(scenario())


def test_keyspace_is_empty_without_queues() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            assert await wire.send(resp(b"INFO", b"keyspace")) == b"$12\r\n# Keyspace\r\n\r\n"

    run(scenario())


def test_slowlog_keeps_commands_over_the_threshold_newest_first() -> None:
    async def scenario() -> None:
        async with connected(slowlog_log_slower_than=0, slowlog_max_len=3) as wire:
            await wire.call(b"PING")
            await wire.send(resp(b"ECHO", b"x" * 200))
            await wire.send(resp(b"AUTH", b"secret"))  # never logged: it holds a password
            # PING and ECHO; a command is logged once it has run, so not this one yet.
            assert await wire.call(b"SLOWLOG LEN") == b":2\r\n"
            reply = await wire.call(b"SLOWLOG GET 2")
            assert reply.startswith(b"*2\r\n*6\r\n:2\r\n:")
            assert b"*1\r\n$11\r\nSLOWLOG LEN\r\n" not in reply  # arguments are kept one by one
            assert b"*2\r\n$7\r\nSLOWLOG\r\n$3\r\nLEN\r\n$15\r\n127.0.0.1:50000\r\n$0\r\n\r\n" in reply
            assert b"$147\r\n" + b"x" * 128 + b"... (72 more bytes)\r\n" in reply
            assert b"secret" not in reply
            assert await wire.call(b"SLOWLOG RESET") == b"+OK\r\n"
            assert await wire.call(b"SLOWLOG LEN") == b":1\r\n"  # the RESET itself
            assert (await wire.call(b"SLOWLOG GET -2")).startswith(b"-ERR count should be")

    run(scenario())


def test_slowlog_threshold_default_keeps_fast_commands_out() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            await wire.call(b"PING")
            assert await wire.call(b"SLOWLOG GET") == b"*0\r\n"

    run(scenario())


def test_slowlog_shows_at_most_32_arguments() -> None:
    async def scenario() -> None:
        async with connected(slowlog_log_slower_than=0) as wire:
            await wire.send(resp(b"QLEASE"))  # wrong arity: rejected before running, not logged
            await wire.send(resp(b"PING", *[b"a"] * 40))  # ran and failed: logged
            reply = await wire.call(b"SLOWLOG GET 1")
            assert reply.startswith(b"*1\r\n*6\r\n:0\r\n")
            assert b"*32\r\n$4\r\nPING\r\n" in reply
            assert b"$23\r\n... (10 more arguments)\r\n" in reply

    run(scenario())


def test_client_kill_old_form_and_filters() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            assert await wire.call(b"CLIENT KILL 10.0.0.1:1") == b"-ERR No such client\r\n"
            assert await wire.call(b"CLIENT KILL ID 1") == b":0\r\n"  # itself: skipped by default
            assert await wire.call(b"CLIENT KILL ID 0") == b"-ERR client-id should be greater than 0\r\n"
            assert await wire.call(b"CLIENT KILL USER nobody") == b"-ERR No such user 'nobody'\r\n"
            assert await wire.call(b"CLIENT KILL ID 1 ADDR") == b"-ERR syntax error\r\n"
            assert await wire.call(b"CLIENT KILL FOO bar") == b"-ERR syntax error\r\n"
            assert await wire.call(b"CLIENT KILL ADDR 127.0.0.1:50000 SKIPME no") == b":1\r\n"
            assert wire.transport.closed  # after its reply, as Redis closes a client that kills itself

    run(scenario())


def test_client_kill_old_form_kills_itself_after_the_reply() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            assert await wire.call(b"CLIENT KILL 127.0.0.1:50000") == b"+OK\r\n"
            assert wire.transport.closed

    run(scenario())


def test_client_list_shows_fd_memory_and_blocked_flag() -> None:
    async def scenario() -> None:
        async with connected() as wire:
            line = (await wire.call(b"CLIENT INFO")).decode()
            assert " fd=-1 " in line  # the fake transport has no socket
            assert " flags=N " in line and " tot-mem=0 " in line
            await wire.call(b"QCREATE jobs")
            await wire.call(b"QLEASE jobs BLOCK 0")
            line = wire.connection.client.info_line(0.0)
            assert " flags=b " in line

    run(scenario())
