"""HTTP Basic for /metrics with the RESP users: when the `default` user needs a password, so does
/metrics (unless `http-metrics-public`), and a user sees only the queues its patterns allow.

Failures are logged like a failed AUTH (user and address, never the password); the comparison is the
RESP one (`Users.authenticate`: constant time, same work for an unknown user).
"""

from __future__ import annotations

import base64
import binascii
import logging

from querator.auth import User, Users

log = logging.getLogger("querator.auth")

CHALLENGE = 'Basic realm="querator", charset="UTF-8"'


def basic_user(users: Users, authorization: str, addr: str) -> User | None:
    """The user an `Authorization: Basic ...` header proves, or None (missing, malformed or wrong)."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    name_raw, colon, password = decoded.partition(b":")
    if not colon:
        return None
    name = name_raw.decode("utf-8", "replace")
    user = users.authenticate(name, password)
    if user is None:
        log.warning("failed login", extra={"fields": {"user": name, "addr": addr, "via": "http"}})
    return user
