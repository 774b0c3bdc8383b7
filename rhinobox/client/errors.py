"""Errors the client raises: the server's `{"error": {"code", "message"}}` with its HTTP status."""

from __future__ import annotations

__all__ = ["RhinoBoxClientError", "ServerError"]


class RhinoBoxClientError(Exception):
    """Base of the client's errors."""


class ServerError(RhinoBoxClientError):
    """The server refused a request; `code` is its stable error code (or `http_<status>` if it sent none)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
