"""The CSRF token and Origin rule alone, in process (ADR 16): exact, fast, one line per promise."""

from __future__ import annotations

from querator.http.csrf import Csrf

HOST = "127.0.0.1:2320"


def test_a_token_belongs_to_one_user_and_one_server_run() -> None:
    csrf = Csrf(b"k" * 32)
    assert csrf.token("ops") == csrf.token("ops")
    assert csrf.token("ops") != csrf.token("viewer")
    assert Csrf(b"j" * 32).token("ops") != csrf.token("ops")
    assert Csrf().token("ops") != Csrf().token("ops")  # a fresh secret per server start


def test_refusals() -> None:
    csrf = Csrf(b"k" * 32)
    good = csrf.token("ops")
    assert csrf.refusal("ops", good, f"http://{HOST}", HOST) == ""
    assert csrf.refusal("ops", good, None, HOST) == ""  # not a browser: the token alone decides
    assert csrf.refusal("ops", "", f"http://{HOST}", HOST) == "missing or wrong token"
    assert csrf.refusal("viewer", good, f"http://{HOST}", HOST) == "missing or wrong token"
    for origin in ("null", "http://evil.example", f"https://{HOST}", "http://127.0.0.1:2321", ""):
        assert csrf.refusal("ops", good, origin, HOST) == "cross-origin request", origin
