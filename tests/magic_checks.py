"""What the type-detection tests compare: the sniffer with its shortcuts against libmagic on everything."""

from __future__ import annotations

from rhinobox.ingest.sniff import MimeSniffer

__all__ = ["disagreements"]


def disagreements(buffers: list[bytes]) -> list[str]:
    """Buffers on which the sniffer with the prefilter answers otherwise than without it."""
    fast, whole = MimeSniffer(prefilter=True), MimeSniffer(prefilter=False)
    found = []
    for data in buffers:
        got, want = fast.sniff_document(data), whole.sniff_document(data)
        if got != want:
            found.append(f"{data[:40]!r}: {got} instead of {want}")
    return found
