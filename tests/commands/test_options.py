"""The one option parser: options come from the command's declaration, in any order, and every mistake
gets Redis's text with the option named after `; `."""

from __future__ import annotations

import pytest

from querator.commands.cursor import ArgCursor, OptionSpec, parse_int
from querator.commands.table import Arg
from querator.errors import CommandError
from tests.commands.harness import connected
from tests.support import run

_SPEC = OptionSpec(
    Arg("count", "integer", token="COUNT", optional=True),
    Arg(
        "when",
        "oneof",
        optional=True,
        children=(Arg("at", "integer", token="AT"), Arg("now", "pure-token", token="NOW")),
    ),
    Arg("name", token="NAME", optional=True),
)
_TAILED = OptionSpec(Arg("kind", token="KIND", optional=True), Arg("payload", token="ITEMS", multiple=True))


def _cursor(*words: bytes) -> ArgCursor:
    return ArgCursor([b"CMD", *words])


def test_options_in_any_order_case_insensitive_last_wins() -> None:
    options = _cursor(b"name", b"x", b"Count", b"3", b"NOW", b"COUNT", b"4").options(_SPEC)
    assert options.integer(b"COUNT") == 4
    assert options.text(b"NAME") == "x"
    assert options.flag(b"NOW")
    assert options.integer(b"AT") is None
    assert not _cursor().options(_SPEC).flag(b"NOW")


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((b"COLOUR", b"blue"), "syntax error"),
        ((b"COUNT",), "syntax error"),
        ((b"COUNT", b"abc"), "value is not an integer or out of range; COUNT takes an integer"),
        ((b"AT", b"1.5"), "value is not an integer or out of range; AT takes an integer"),
    ],
)
def test_option_mistakes(words: tuple[bytes, ...], message: str) -> None:
    with pytest.raises(CommandError) as err:
        _cursor(*words).options(_SPEC)
    assert err.value.message == message


def test_a_tail_token_ends_the_options_and_the_rest_is_tail() -> None:
    cursor = _cursor(b"KIND", b"k", b"ITEMS", b"KIND", b"x")
    options = cursor.options(_TAILED)
    assert options.raw(b"KIND") == b"k"
    assert cursor.rest() == [b"KIND", b"x"]


def test_options_then_tail_stop_at_the_first_word_that_is_no_option() -> None:
    cursor = _cursor(b"COUNT", b"2", b"1-0-1", b"COUNT")
    assert cursor.options(_SPEC, then_tail=True).integer(b"COUNT") == 2
    assert cursor.rest() == [b"1-0-1", b"COUNT"]


def test_finish_rejects_leftovers() -> None:
    cursor = _cursor(b"a")
    with pytest.raises(CommandError, match=r"^syntax error$"):
        cursor.finish()
    cursor.next_bytes()
    cursor.finish()


@pytest.mark.parametrize("raw", [b"", b"-", b"01", b"1e3", b" 1", b"9223372036854775808", b"+1"])
def test_parse_int_follows_redis(raw: bytes) -> None:
    with pytest.raises(CommandError, match=r"^value is not an integer or out of range$"):
        parse_int(raw)


@pytest.mark.parametrize(("raw", "value"), [(b"0", 0), (b"-0", 0), (b"-9223372036854775808", -(2**63))])
def test_parse_int_accepts_redis_integers(raw: bytes, value: int) -> None:
    assert parse_int(raw) == value


def test_everything_after_items_is_payload_even_option_words() -> None:
    async def main() -> None:
        async with connected() as wire:
            assert await wire.call(b"QCREATE q") == b"+OK\r\n"
            assert await wire.call(b"QPRODUCE q ITEMS KIND x") == b"*2\r\n$5\r\n1-0-1\r\n$5\r\n1-0-2\r\n"
            reply = await wire.call(b"QLEASE q COUNT 2")
            assert b"$4\r\nKIND\r\n" in reply and b"$1\r\nx\r\n" in reply

    run(main())


def test_at_in_seconds_is_refused_with_a_hint_and_small_ats_mean_now() -> None:
    async def main() -> None:
        async with connected() as wire:
            await wire.call(b"QCREATE q")
            assert await wire.call(b"QPRODUCE q AT 1700000000 ITEMS a") == (
                b"-ERR AT must be a Unix time in milliseconds; 1700000000 looks like seconds "
                b"(did you mean 1700000000000?)\r\n"
            )
            # Below the seconds range, an AT in the past still means "now" (ADR 8).
            assert await wire.call(b"QPRODUCE q AT 999999999 ITEMS a") == b"*1\r\n$5\r\n1-0-1\r\n"
            assert await wire.call(b"QLEN q") == b":1\r\n"

    run(main())
