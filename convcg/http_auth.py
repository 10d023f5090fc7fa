"""Bearer tokens and the bind-address rule shared by the HTTP services (features lookups,
retrieval).

A service with a token set answers only requests carrying ``Authorization: Bearer <token>``;
the header is compared with :func:`hmac.compare_digest` (constant time), so the time a refusal
takes says nothing about how much of a guessed token was right. A service without a token is
open, and may therefore only listen on a loopback address: :func:`check_bind` refuses any other.
"""

from __future__ import annotations

import hmac
import ipaddress

UNAUTHORIZED_MESSAGE = "missing or wrong bearer token (Authorization: Bearer <token>)"
#: the header a 401 carries (RFC 6750)
WWW_AUTHENTICATE = ("www-authenticate", "Bearer")


class UnsafeBind(ValueError):
    """An open service (no token) asked to listen on a non-loopback address."""


def expected_header(token: str | None) -> bytes | None:
    """The exact ``Authorization`` value ``token`` asks for; None when there is no token (open)."""
    return f"Bearer {token}".encode() if token else None


def authorized(header: bytes | str | None, expected: bytes | None) -> bool:
    """Whether an ``Authorization`` header value grants access (always, with no token set).

    ``str`` headers are the latin-1 decoding of the wire bytes (Starlette's), turned back into
    those bytes before the constant-time comparison."""
    if expected is None:
        return True
    if header is None:
        got = b""
    elif isinstance(header, str):
        got = header.encode("latin-1", "replace")
    else:
        got = header
    return hmac.compare_digest(got, expected)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP (127.0.0.0/8, ::1); anything else, including names that
    might resolve elsewhere and the wildcard addresses, is not."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, *, service: str, token_setting: str) -> None:
    """Refuse to serve without a token on a non-loopback address (raises :class:`UnsafeBind`)."""
    if not token and not is_loopback(host):
        raise UnsafeBind(
            f"refusing to start the {service} on {host}: it would accept requests from other "
            f"machines without a token. Set {token_setting} (clients then send "
            f"'Authorization: Bearer <token>'), or bind 127.0.0.1.")
