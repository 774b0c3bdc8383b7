"""A database driver's errors as the domain's, around a backend's methods: the one place a backend catches them.

Each backend names its driver's error classes and a translation once (sqlite_errors, postgres_errors);
`DriverErrors` wraps that backend's coroutine methods and async iterators with it. Code above a backend
then only ever sees `InsufficientStorage` (507) or `StorageError` (500), whichever backend it runs on.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from rhinobox.errors import RhinoBoxError

__all__ = ["DriverErrors", "Translation"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# A driver error and what the caller was doing ("record the uploads") to the domain error.
Translation = Callable[[Exception, str], RhinoBoxError]


class DriverErrors:
    """Translates the `caught` error classes of one driver with `translate`, raised from the cause."""

    def __init__(self, caught: tuple[type[Exception], ...], translate: Translation) -> None:
        self.caught = caught
        self._translate = translate

    def translated(self, exc: BaseException, doing: str) -> BaseException:
        """`exc` as the domain's error if it is the driver's (with `exc` as its cause), else `exc` itself."""
        if not isinstance(exc, self.caught):
            return exc
        error = self._translate(exc, doing)
        error.__cause__ = exc
        return error

    def __call__(self, doing: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
        """A decorator for a coroutine method: the driver's errors leave it as the domain's."""

        def wrap(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            @functools.wraps(method)
            async def translating(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    return await method(*args, **kwargs)
                except self.caught as exc:
                    raise self._translate(exc, doing) from exc

            return translating

        return wrap

    def iteration(
        self, doing: str
    ) -> Callable[[Callable[P, AsyncGenerator[T, None]]], Callable[P, AsyncGenerator[T, None]]]:
        """A decorator for an async generator method: the driver's errors leave it as the domain's."""

        def wrap(method: Callable[P, AsyncGenerator[T, None]]) -> Callable[P, AsyncGenerator[T, None]]:
            @functools.wraps(method)
            async def translating(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
                source = method(*args, **kwargs)
                try:
                    async with contextlib.aclosing(source):
                        async for item in source:
                            yield item
                except self.caught as exc:
                    raise self._translate(exc, doing) from exc

            return translating

        return wrap
