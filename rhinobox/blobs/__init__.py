"""Blob storage: bytes by BLAKE3 hash. `BlobStore` is the interface; `LocalBlobStore` the first backend."""

from rhinobox.blobs.digest import DIGEST_HEX_LEN, is_digest, require_digest
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.blobs.store import BlobStore

__all__ = ["DIGEST_HEX_LEN", "BlobStore", "LocalBlobStore", "is_digest", "require_digest"]
