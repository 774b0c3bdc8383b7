"""The upload-pin front shared by the cross-process (file locks) and cross-node (PostgreSQL) hash locks.

A pin is taken locally first (`HashPins`: deletes in this process wait for it), then shared with the
other processes or nodes by the subclass's `_hold_shared`; released in the reverse order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from rhinobox.ingest.pins import HashPins

__all__ = ["SharedPins"]


class SharedPins(ABC):
    """`pin`/`unpin` over a local `HashPins` and a shared hold the subclass implements."""

    def __init__(self) -> None:
        self._local = HashPins()

    @abstractmethod
    async def _hold_shared(self, digest: str) -> None:
        """Share this process's pin of `digest`; waits while a delete of it runs elsewhere."""

    @abstractmethod
    def _drop_shared(self, digest: str) -> None:
        """Release one share taken by `_hold_shared`."""

    async def pin(self, digest: str) -> None:
        """Take a shared pin; waits only while a delete of this digest runs (here or elsewhere)."""
        await self._local.pin(digest)
        try:
            await self._hold_shared(digest)
        except BaseException:
            self._local.unpin(digest)
            raise

    def unpin(self, digest: str) -> None:
        self._drop_shared(digest)
        self._local.unpin(digest)

    def unpin_all(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.unpin(digest)

    def pinned(self, digest: str) -> int:
        """Pins held in this process (other processes' or nodes' pins are not visible here)."""
        return self._local.pinned(digest)
