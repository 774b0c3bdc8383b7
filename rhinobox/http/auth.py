"""Optional bearer-token auth: off by default; with tokens configured, every route but `/healthz` needs one.

Tokens come from `RHINOBOX_API_TOKENS` and `RHINOBOX_API_TOKEN_FILE`, each `TOKEN`, `TOKEN:rw` or
`TOKEN:ro` (read-only: GET and HEAD). Tokens are compared as SHA-256 digests with
`hmac.compare_digest`, against every configured token, so timing says nothing about how much of a
guess was right or which token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from rhinobox.errors import Forbidden, Unauthorized
from rhinobox.http.errors import Handler, error_response
from rhinobox.http.keys import API_TOKENS
from rhinobox.settings import Settings, SettingsError

__all__ = ["PUBLIC_PATHS", "TokenSet", "auth_middleware", "load_tokens", "setup_auth"]

log = logging.getLogger(__name__)

PUBLIC_PATHS: Final = frozenset({"/healthz", "/"})  # "/": the web page, which asks for a token itself
PUBLIC_PREFIX: Final = "/assets/"  # the web page's script and style (no data)
READ_METHODS: Final = frozenset({"GET", "HEAD"})
READ_ONLY: Final = "ro"
READ_WRITE: Final = "rw"
BEARER: Final = "bearer "
CHALLENGE: Final = 'Bearer realm="rhinobox"'


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The configured tokens as (sha256 digest, may write) pairs; empty means auth is off."""

    tokens: tuple[tuple[bytes, bool], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def parse(cls, entries: Iterable[str], source: str) -> TokenSet:
        """Tokens from `TOKEN[:ro|:rw]` entries; `source` names the setting in errors."""
        tokens: list[tuple[bytes, bool]] = []
        for raw in entries:
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            secret, sep, mode = entry.rpartition(":")
            if not sep or mode not in (READ_ONLY, READ_WRITE):
                secret, mode = entry, READ_WRITE
            if not secret:
                raise SettingsError(f"{source}: empty token in {entry!r}")
            tokens.append((_digest(secret), mode == READ_WRITE))
        return cls(tuple(tokens))

    def lookup(self, presented: str) -> bool | None:
        """None if `presented` is no configured token, else whether it may write. Constant time in the match."""
        wanted = _digest(presented)
        may_write: bool | None = None
        for digest, writes in self.tokens:
            if hmac.compare_digest(digest, wanted):
                may_write = writes if may_write is None else may_write or writes
        return may_write


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(settings: Settings) -> TokenSet:
    """Every token from the settings and the token file. Raises SettingsError if the file cannot be read."""
    entries = list(settings.api_tokens)
    tokens = TokenSet.parse(entries, "RHINOBOX_API_TOKENS")
    if settings.api_token_file:
        try:
            lines = Path(settings.api_token_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"RHINOBOX_API_TOKEN_FILE: cannot read {settings.api_token_file!r}: {exc}") from None
        tokens = TokenSet(tokens.tokens + TokenSet.parse(lines, "RHINOBOX_API_TOKEN_FILE").tokens)
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_auth(app: web.Application, settings: Settings) -> None:
    """Load the tokens into `app`, and warn loudly when an open server listens beyond loopback."""
    tokens = load_tokens(settings)
    app[API_TOKENS] = tokens
    if tokens.enabled:
        log.info("API token auth is on (%d token(s))", len(tokens.tokens))
    elif not is_loopback(settings.host):
        log.warning(
            "API token auth is OFF and the server listens on %s: anyone who can reach it can read and write. "
            "Set RHINOBOX_API_TOKENS or RHINOBOX_API_TOKEN_FILE.",
            settings.host,
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a valid token, 403 for a read-only token on anything but GET and HEAD."""
    tokens = request.app[API_TOKENS]
    # OPTIONS (tus discovery at /uploads/) tells only what the protocol offers, as a CORS preflight would.
    if (
        not tokens.enabled
        or request.method == hdrs.METH_OPTIONS
        or request.path in PUBLIC_PATHS
        or request.path.startswith(PUBLIC_PREFIX)
    ):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    may_write = tokens.lookup(header[len(BEARER) :].strip()) if header[: len(BEARER)].lower() == BEARER else None
    if may_write is None:
        response = error_response(Unauthorized())
        response.headers["WWW-Authenticate"] = CHALLENGE
        return response
    if not may_write and request.method not in READ_METHODS:
        return error_response(Forbidden())
    return await handler(request)
