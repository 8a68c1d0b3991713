"""Coverage-guided fuzzing of `querator.resp.parser.RequestParser` with atheris (libFuzzer for Python).

    .venv/bin/pip install atheris
    .venv/bin/python tests/reliability/fuzz_parser_atheris.py -runs=100000
    # with the seed corpus (libFuzzer writes new inputs to the FIRST directory, so give it a scratch one;
    # crash files go to $TMPDIR/querator-parser-crash-* unless -artifact_prefix= is given):
    .venv/bin/python tests/reliability/fuzz_parser_atheris.py /tmp/parser-corpus \
        tests/reliability/corpus/parser -runs=100000

Not collected by pytest (the name does not start with `test_`); `check_input` is importable without atheris,
so the seed corpus can be replayed in the ordinary test run.

One input is two control bytes and a byte stream. Control byte 0: bit 0 = the client is authenticated,
bit 1 = a small max-bulk-bytes (64, so bulk-length limits are reached), bit 2 = a small query buffer
limit (256); control byte 1 seeds how the stream is cut into chunks. The stream is fed chunk by chunk,
draining commands after each chunk, until NEED_DATA or a ProtocolError (after which the parser must not be
used, as the server closes the connection). Properties checked:

- only `ProtocolError` escapes, and its text starts with "Protocol error: " or is the query-buffer text;
- every command is a non-empty list of `bytes`;
- `buffered_bytes()` is never negative and never more than what was fed;
- chunking does not matter: fed in one piece, the same stream gives the same commands and the same error
  (the limits that legitimately depend on chunking, Redis's 64 KiB "too big ..." checks and the query
  buffer limit, are out of reach of this comparison: the comparison is skipped when they fire).
"""

from __future__ import annotations

import random
import sys
import tempfile

from querator.resp.parser import NEED_DATA, ParserLimits, ProtocolError, RequestParser

_CHUNK_DEPENDENT = ("too big", "query buffer limit")


def _limits(flags: int) -> ParserLimits:
    limits = ParserLimits()
    if flags & 2:
        limits.max_bulk_bytes = 64
    if flags & 4:
        limits.max_query_buffer_bytes = 256
    return limits


def _run(stream: bytes, chunks: list[bytes], flags: int) -> tuple[list[list[bytes]], str | None]:
    parser = RequestParser(_limits(flags), authenticated=bool(flags & 1))
    commands: list[list[bytes]] = []
    fed = 0
    for chunk in chunks:
        try:
            parser.feed(chunk)
            fed += len(chunk)
            while True:
                buffered = parser.buffered_bytes()
                assert 0 <= buffered <= fed, (buffered, fed)
                command = parser.next_command()
                if command is NEED_DATA:
                    break
                assert isinstance(command, list) and command, command
                assert all(type(arg) is bytes for arg in command), command
                commands.append(command)
        except ProtocolError as exc:
            text = str(exc)
            assert text.startswith("Protocol error: ") or text == "query buffer limit reached", text
            return commands, text
    return commands, None


def _cut(stream: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    if not stream:
        return [b""]
    pieces = []
    pos = 0
    while pos < len(stream):
        size = rng.choice((1, 1, 2, 3, 5, 8, 13, 64, len(stream)))
        pieces.append(stream[pos : pos + size])
        pos += size
    return pieces


def check_input(data: bytes) -> None:
    """The fuzz target; raises AssertionError (or any unexpected exception) on a bug."""
    if len(data) < 2:
        return
    flags, seed, stream = data[0], data[1], data[2:]
    chunked = _run(stream, _cut(stream, seed), flags)
    whole = _run(stream, [stream], flags)
    errors = f"{chunked[1]} {whole[1]}"
    if not any(marker in errors for marker in _CHUNK_DEPENDENT):
        assert chunked == whole, (stream, chunked, whole)


def main() -> int:
    try:
        import atheris
    except ImportError:
        print(
            "fuzz_parser_atheris: atheris is not installed; run `.venv/bin/pip install atheris` "
            "(it needs a Linux x86-64 wheel or clang with libFuzzer to build)",
            file=sys.stderr,
        )
        return 2
    # Instrument the parser itself so libFuzzer sees its branches (the import above was uninstrumented).
    import importlib

    import querator.resp.parser as parser_module

    with atheris.instrument_imports():
        importlib.reload(parser_module)
    global NEED_DATA, ParserLimits, ProtocolError, RequestParser
    NEED_DATA = parser_module.NEED_DATA
    ParserLimits = parser_module.ParserLimits
    ProtocolError = parser_module.ProtocolError
    RequestParser = parser_module.RequestParser
    atheris.instrument_func(check_input)
    atheris.instrument_func(_run)
    argv = list(sys.argv)
    if not any(arg.startswith("-artifact_prefix=") for arg in argv):
        # Crash files go to the temp directory, not into whatever directory this was started from.
        argv.append(f"-artifact_prefix={tempfile.gettempdir()}/querator-parser-")
    atheris.Setup(argv, check_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
