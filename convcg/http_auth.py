"""What every HTTP service shares (features lookups, retrieval): bearer tokens, the bind-address
rule, a request body-size limit (413) and generic 500 bodies.

A service with a token set answers only requests carrying ``Authorization: Bearer <token>``;
the header is compared with :func:`hmac.compare_digest` (constant time), so the time a refusal
takes says nothing about how much of a guessed token was right. A service without a token is
open, and may therefore only listen on a loopback address: :func:`check_bind` refuses any other.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import uuid

import orjson
from pydantic import SecretStr
from starlette.exceptions import HTTPException

UNAUTHORIZED_MESSAGE = "missing or wrong bearer token (Authorization: Bearer <token>)"
#: the header a 401 carries (RFC 6750)
WWW_AUTHENTICATE = ("www-authenticate", "Bearer")


class UnsafeBind(ValueError):
    """An open service (no token) asked to listen on a non-loopback address."""


def expected_header(token: SecretStr | str | None) -> bytes | None:
    """The exact ``Authorization`` value ``token`` asks for; None when there is no token (open)."""
    token = secret(token)
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


def check_bind(host: str, token: SecretStr | str | None, *, service: str, token_setting: str) -> None:
    """Refuse to serve without a token on a non-loopback address (raises :class:`UnsafeBind`)."""
    if not secret(token) and not is_loopback(host):
        raise UnsafeBind(
            f"refusing to start the {service} on {host}: it would accept requests from other "
            f"machines without a token. Set {token_setting} (clients then send "
            f"'Authorization: Bearer <token>'), or bind 127.0.0.1.")


# --- secrets -------------------------------------------------------------------------------------

def secret(value: SecretStr | str | None) -> str:
    """The plain text of a token setting (``SecretStr`` in the settings, so that their repr,
    ``model_dump`` and logs show ``**********``); ``""`` for none. Use only where the token is
    sent or compared."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


# --- guards every HTTP app gets: a body-size limit, generic 500 bodies -----------------------------

#: the largest request body a service reads by default (a setting of each service)
DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """A request body past the limit (413); raised while the body is being received, so the
    body is never read whole."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


async def _send_json(send, status: int, body: dict) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


class BodyLimit:
    """ASGI middleware: a request declaring a body over ``max_bytes`` gets 413 before anything
    reads it; a body sent without a length (chunked) is counted as it arrives and refused with
    413 as soon as it passes the limit."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES, error_field: str = "detail"):
        self.app, self.max_bytes, self.error_field = app, int(max_bytes), error_field

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and not 0 <= declared <= self.max_bytes:
            message = (BodyTooLarge(self.max_bytes).detail if declared >= 0
                       else "content-length is not a number")
            await _send_json(send, 413 if declared >= 0 else 400, {self.error_field: message})
            return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as exc:  # an app that let it through (not a Starlette one)
            if started:
                raise
            await _send_json(send, 413, {self.error_field: exc.detail})


def internal_error(logger: logging.Logger, what: str, error_field: str = "detail") -> dict:
    """The body of a 500: a generic message and a request id; the exception being handled is
    logged with that id (call inside ``except``). Nothing of the exception reaches the client."""
    request_id = uuid.uuid4().hex
    logger.error("%s (request_id %s)", what, request_id, exc_info=True)
    return {error_field: "internal error", "request_id": request_id}


def install_http_guards(app, max_body_bytes: int, logger: logging.Logger, error_field: str = "detail") -> None:
    """Give a FastAPI ``app`` the shared guards: :class:`BodyLimit` and a generic 500 body (the
    details, with the request id the client sees, go to ``logger``)."""
    from fastapi.responses import JSONResponse

    async def too_large(_request, exc: BodyTooLarge):
        return JSONResponse({error_field: exc.detail}, 413)

    async def unexpected(request, exc: Exception):
        request_id = uuid.uuid4().hex
        logger.error("unhandled error in %s %s (request_id %s)", request.method, request.url.path, request_id,
                     exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({error_field: "internal error", "request_id": request_id}, 500)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, error_field=error_field)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(Exception, unexpected)
