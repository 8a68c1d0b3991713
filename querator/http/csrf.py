"""Cross-site request forgery checks for the dashboard's POST actions (ADR 16).

A token is an HMAC-SHA256 of the user's name under a secret drawn when the server starts, so it needs no
storage, differs per user, and every token dies with the process. A POST acts only when it carries the
token of the user it authenticated as, and its `Origin`, when a browser sends one, is the server's own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# The header the page sets on every action (a custom header also forces a CORS preflight cross-site).
TOKEN_HEADER = "X-Querator-Token"


class Csrf:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def token(self, user: str) -> str:
        """The token the page of `user` sends back ("" is the user when no password is needed)."""
        return hmac.new(self._secret, b"querator-dashboard\0" + user.encode(), hashlib.sha256).hexdigest()

    def refusal(self, user: str, token: str, origin: str | None, host: str) -> str:
        """Why a POST of `user` may not act, or "" when it may."""
        if origin is not None and origin != f"http://{host}":
            # A foreign page, or an opaque origin ("null": sandboxed frames, file:// pages, redirects).
            return "cross-origin request"
        if not token or not hmac.compare_digest(token.encode(), self.token(user).encode()):
            return "missing or wrong token"
        return ""
