"""The domain's errors: each carries a stable machine-readable code; HTTP maps codes to statuses."""

from __future__ import annotations

import errno
from typing import ClassVar

__all__ = [
    "BadHash",
    "BlobNotFound",
    "ClientDisconnected",
    "DigestMismatch",
    "EmptyFile",
    "FieldTooLarge",
    "FileTooLarge",
    "Forbidden",
    "InsufficientStorage",
    "InvalidBody",
    "InvalidParameter",
    "InvalidRules",
    "JobNotFound",
    "MalformedMultipart",
    "NoFiles",
    "NotMultipart",
    "Overloaded",
    "PreconditionFailed",
    "RangeNotSatisfiable",
    "RhinoBoxError",
    "StorageError",
    "TooManyFiles",
    "TooManyHashes",
    "Unauthorized",
    "UnsupportedEncoding",
    "UploadTimeout",
    "storage_failure",
]


class RhinoBoxError(Exception):
    """Base of every error a client may see; `code` is stable, the message is for humans."""

    code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class NotMultipart(RhinoBoxError):
    code = "not_multipart"
    default_message = "expected a multipart/form-data body"


class MalformedMultipart(RhinoBoxError):
    code = "malformed_multipart"
    default_message = "the multipart body could not be parsed"


class NoFiles(RhinoBoxError):
    code = "no_files"
    default_message = "the request holds no file parts"


class TooManyFiles(RhinoBoxError):
    code = "too_many_files"
    default_message = "more files than one request may carry"


class FileTooLarge(RhinoBoxError):
    code = "file_too_large"
    default_message = "the file is larger than the per-file limit"


class EmptyFile(RhinoBoxError):
    code = "empty_file"
    default_message = "the file is empty"


class Overloaded(RhinoBoxError):
    code = "overloaded"
    default_message = "the ingest queue is full; retry later"
    retry_after_seconds: ClassVar[int] = 1


class InsufficientStorage(RhinoBoxError):
    code = "insufficient_storage"
    default_message = "not enough free space on the data disk"


class StorageError(RhinoBoxError):
    code = "storage_error"
    default_message = "the file could not be stored"


def storage_failure(exc: OSError, doing: str) -> InsufficientStorage | StorageError:
    """The domain error for a failed disk call: a full disk or quota is 507, anything else a storage error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage()
    return StorageError(f"could not {doing} ({exc.strerror})")


class ClientDisconnected(RhinoBoxError):
    code = "client_disconnected"
    default_message = "the client went away before the upload was complete"


class BadHash(RhinoBoxError):
    code = "bad_hash"
    default_message = "a hash must be 64 lowercase hex characters (BLAKE3-256)"


class BlobNotFound(RhinoBoxError):
    code = "not_found"
    default_message = "no blob with that hash"


class DigestMismatch(RhinoBoxError):
    code = "digest_mismatch"
    default_message = "the content does not match the expected digest"


class InvalidRules(RhinoBoxError):
    code = "invalid_rules"
    default_message = "the category rules are not valid"


class FieldTooLarge(RhinoBoxError):
    code = "field_too_large"
    default_message = "a text field is larger than allowed"


class Unauthorized(RhinoBoxError):
    code = "unauthorized"
    default_message = "a valid API token is required"


class Forbidden(RhinoBoxError):
    code = "forbidden"
    default_message = "this API token may only read"


class JobNotFound(RhinoBoxError):
    code = "job_not_found"
    default_message = "no job with that id (it may have expired)"


class InvalidParameter(RhinoBoxError):
    code = "invalid_parameter"
    default_message = "a query parameter has an invalid value"


class InvalidBody(RhinoBoxError):
    code = "invalid_body"
    default_message = "the request body is not valid"


class TooManyHashes(RhinoBoxError):
    code = "too_many_hashes"
    default_message = "too many hashes in one request"


class RangeNotSatisfiable(RhinoBoxError):
    code = "range_not_satisfiable"
    default_message = "the requested range is outside the content"

    def __init__(self, size: int) -> None:
        super().__init__(f"the content is {size} bytes long; the range starts at or past its end")
        self.size = size


class PreconditionFailed(RhinoBoxError):
    code = "precondition_failed"
    default_message = "If-Match does not match the content hash"


class UploadTimeout(RhinoBoxError):
    code = "upload_timeout"
    default_message = "the client stopped sending the upload"


class UnsupportedEncoding(RhinoBoxError):
    """A compressed request body: unpacking it could turn a few KB into gigabytes past every limit."""

    code = "unsupported_encoding"
    default_message = "request bodies must not be compressed (Content-Encoding: identity or none)"


class UploadNotFound(RhinoBoxError):
    """No resumable upload with that id: never created, terminated, expired and reclaimed, or completed long ago."""

    code = "upload_not_found"
    default_message = "no such upload (it may have expired or been terminated)"


class UploadOffsetMismatch(RhinoBoxError):
    """The client's Upload-Offset is not where the upload stands: it must ask (HEAD) and resume from there."""

    code = "upload_offset_mismatch"
    default_message = "Upload-Offset does not match the upload's offset"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"the upload is at offset {expected}, the request says {got}")
        self.expected = expected
        self.got = got


class UploadLocked(RhinoBoxError):
    """Another request is appending to the same upload; bytes of two requests are never interleaved."""

    code = "upload_locked"
    default_message = "another request is appending to this upload"


class UploadTooLong(RhinoBoxError):
    """More bytes than the upload's declared length, or a length past the server's maximum."""

    code = "upload_too_long"
    default_message = "the upload would exceed its length"


class InvalidUploadHeader(RhinoBoxError):
    """A resumable-upload header that cannot be parsed (Upload-Length, Upload-Offset, Upload-Metadata...)."""

    code = "invalid_upload_header"
    default_message = "a resumable upload header is missing or malformed"


class UnsupportedProtocolVersion(RhinoBoxError):
    """A Tus-Resumable version (or draft interop version) this server does not speak."""

    code = "unsupported_protocol_version"
    default_message = "this server speaks tus 1.0.0"


class ChecksumMismatch(RhinoBoxError):
    """A chunk's Upload-Checksum did not match its bytes; the chunk was discarded (tus status 460)."""

    code = "checksum_mismatch"
    default_message = "the chunk does not match its Upload-Checksum; it was discarded"


class UnsupportedChecksum(RhinoBoxError):
    """An Upload-Checksum algorithm the server does not offer in Tus-Checksum-Algorithm."""

    code = "unsupported_checksum"
    default_message = "unsupported checksum algorithm"


class TooManyOpenUploads(RhinoBoxError):
    """RHINOBOX_MAX_OPEN_UPLOADS uploads are open: finish, terminate or let some expire first."""

    code = "too_many_open_uploads"
    default_message = "too many open uploads; try again later"


class UploadFailed(RhinoBoxError):
    """The upload's bytes all arrived but could not be stored (its error says why); it takes no more bytes."""

    code = "upload_failed"
    default_message = "the upload ended with an error"
