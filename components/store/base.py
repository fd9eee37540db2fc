"""The object-store contract: :class:`ObjectStore`, :class:`ObjectInfo`, keys and errors.

Every backend (a local directory, S3/MinIO) implements :class:`ObjectStore`. The JSON and text
helpers are implemented once here on top of the byte-level methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_CONTENT_TYPE",
    "RESERVED_PREFIXES",
    "ChecksumMismatchError",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "StoreConfigError",
    "StoreError",
    "StorePermissionError",
    "StoreUnavailableError",
    "check_checksum",
    "collapse_keys",
    "iter_chunks",
    "sha256_file",
    "sha256_hex",
    "validate_key",
    "validate_prefix",
]

CHUNK_SIZE = 1024 * 1024
"""Bytes read at a time when streaming, hashing or copying."""

RESERVED_PREFIXES = (".meta", ".tmp")
"""First key segments reserved for the store's own bookkeeping (checksums, temp files)."""

DEFAULT_CONTENT_TYPE = "application/octet-stream"


class StoreError(Exception):
    """Any failure of an object-store operation.

    The message names the full URI involved (``s3://bucket/prefix/key`` or
    ``file:///abs/path``), says why it failed and, where possible, how to fix it.

    Attributes:
        uri: The URI of the object or store the operation was about.
    """

    def __init__(self, message: str, *, uri: str = "") -> None:
        super().__init__(message)
        self.uri = uri


class InvalidKeyError(StoreError, ValueError):
    """A key or prefix is not a clean relative '/'-separated path."""


class StoreConfigError(StoreError):
    """The store URI or its configuration (environment variables) is missing or invalid."""


class ObjectNotFoundError(StoreError):
    """The object (or its bucket) does not exist."""


class StorePermissionError(StoreError):
    """The store refused access (file permissions, S3 credentials or bucket policy)."""


class StoreUnavailableError(StoreError):
    """A transient failure (network, S3 5xx/SlowDown) persisted through every retry."""


class ChecksumMismatchError(StoreError):
    """The data read does not match its expected or stored sha256.

    Attributes:
        expected: The sha256 the data should have.
        actual: The sha256 of the data actually read.
    """

    def __init__(
        self, message: str, *, uri: str = "", expected: str = "", actual: str = ""
    ) -> None:
        super().__init__(message, uri=uri)
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    Attributes:
        key: The key relative to the store root.
        size: Size in bytes.
        sha256: Hex sha256 of the content; ``""`` when the object was written by another tool
            and carries no stored checksum.
        uri: The object's full URI.
    """

    key: str
    size: int
    sha256: str
    uri: str


def _check_segments(value: str, segments: list[str], what: str) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKeyError(
                f"invalid {what} {value!r}: empty, '.' and '..' segments are not allowed; "
                "use a relative path like 'models/fraud/1/model.json'"
            )
    if segments and segments[0] in RESERVED_PREFIXES:
        raise InvalidKeyError(
            f"invalid {what} {value!r}: the first segment {segments[0]!r} is reserved for the "
            f"store's own bookkeeping ({', '.join(RESERVED_PREFIXES)}); choose another name"
        )


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidKeyError(
            f"invalid {what} {value!r}: must be a str, got {type(value).__name__}"
        )
    if value.startswith("/"):
        raise InvalidKeyError(
            f"invalid {what} {value!r}: absolute keys are not allowed; keys are relative to the "
            "store root (drop the leading '/')"
        )
    if "\\" in value or "\x00" in value:
        raise InvalidKeyError(
            f"invalid {what} {value!r}: backslashes and NUL characters are not allowed; "
            "separate segments with '/'"
        )
    return value


def validate_key(key: str) -> str:
    """Check that ``key`` is a clean, relative, '/'-separated object key.

    Args:
        key: The key to check, e.g. ``"models/fraud/3/MANIFEST.json"``.

    Returns:
        The key, unchanged.

    Raises:
        InvalidKeyError: The key is empty, absolute, has empty/'.'/'..' segments, a trailing
            '/', backslashes or NUL, or starts with a reserved segment (``.meta``, ``.tmp``).
    """
    _check_text(key, "key")
    if not key:
        raise InvalidKeyError("invalid key '': keys must not be empty")
    _check_segments(key, key.split("/"), "key")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a listing prefix: ``""``, a key prefix, or a "directory" ending in '/'.

    Args:
        prefix: The prefix to check, e.g. ``"models/"`` or ``"models/fr"``.

    Returns:
        The prefix, unchanged.

    Raises:
        InvalidKeyError: The prefix is absolute or has empty/'.'/'..'/reserved segments.
    """
    _check_text(prefix, "prefix")
    if prefix:
        segments = prefix.split("/")
        if segments[-1] == "":
            segments = segments[:-1]
        _check_segments(prefix, segments, "prefix")
    return prefix


def collapse_keys(keys: Iterable[str], prefix: str) -> list[str]:
    """Turn a recursive key listing into a one-level one, the way S3's '/' delimiter does.

    Keys with a further '/' after ``prefix`` collapse into ``prefix + segment + "/"``.

    Args:
        keys: Keys that all start with ``prefix``.
        prefix: The listing prefix.

    Returns:
        Sorted, de-duplicated keys and "directory" prefixes.
    """
    out = set()
    for key in keys:
        head, sep, _ = key[len(prefix) :].partition("/")
        out.add(prefix + head + sep)
    return sorted(out)


def iter_chunks(
    stream: BinaryIO | Iterable[bytes], chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the bytes of a file-like object or an iterable of byte chunks.

    Args:
        stream: Anything with ``read(n)``, or an iterable of ``bytes``/``bytearray``/
            ``memoryview`` chunks (e.g. a generator).
        chunk_size: Read size for file-like objects.

    Yields:
        Non-empty ``bytes`` chunks.

    Raises:
        TypeError: ``stream`` is ``bytes``/``str`` or yields something that is not bytes.
    """
    if isinstance(stream, bytes | bytearray | memoryview | str):
        raise TypeError(
            "put_stream needs a file-like object or an iterable of bytes chunks; "
            "use put_bytes/put_text for a single value"
        )
    read = getattr(stream, "read", None)
    if callable(read):
        while chunk := read(chunk_size):
            yield bytes(chunk)
        return
    for chunk in stream:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"put_stream chunks must be bytes, got {type(chunk).__name__}")
        if chunk:
            yield bytes(chunk)


def check_checksum(uri: str, actual: str, expected: str | None, stored: str | None) -> None:
    """Raise :class:`ChecksumMismatchError` when data does not match its checksum.

    Args:
        uri: The object's URI, for the message.
        actual: sha256 of the data read.
        expected: The caller's expected sha256 (e.g. from a bundle MANIFEST); checked first.
        stored: The sha256 stored with the object; checked when ``expected`` is ``None``.
            ``None`` or ``""`` means "nothing to check against".

    Raises:
        ChecksumMismatchError: The data does not match.
    """
    if expected is not None:
        if actual != expected.lower():
            raise ChecksumMismatchError(
                f"checksum mismatch for {uri}: expected sha256 {expected} (given by the caller) "
                f"but the data read has sha256 {actual}. The object was modified or replaced "
                "after the expected checksum was recorded, or only partially copied; re-upload "
                "it from a trusted source or fix the recorded checksum.",
                uri=uri,
                expected=expected,
                actual=actual,
            )
        return
    if stored and actual != stored:
        raise ChecksumMismatchError(
            f"checksum mismatch for {uri}: the sha256 stored with the object is {stored} but "
            f"the data read has sha256 {actual}. The object was tampered with or only partially "
            "copied (e.g. edited or overwritten outside the store); re-upload it through the "
            "store.",
            uri=uri,
            expected=stored,
            actual=actual,
        )


class ObjectStore(ABC):
    """A flat key -> bytes store with atomic writes and sha256 checksums.

    Keys are relative '/'-separated paths (see :func:`validate_key`). Every write records the
    content's sha256; every read verifies it (unless ``verify=False``). A reader never sees a
    half-written object.

    Attributes:
        uri: The store's root URI (``file:///abs/dir`` or ``s3://bucket/prefix``).
    """

    uri: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    @abstractmethod
    def url_for(self, key: str) -> str:
        """Return the full URI of ``key`` (validated).

        Args:
            key: An object key.

        Returns:
            E.g. ``s3://bucket/prefix/key`` or ``file:///abs/root/key``.
        """

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Write ``data`` to ``key`` atomically, replacing any previous object.

        Args:
            key: The object key.
            data: The content.
            content_type: MIME type (kept by S3, ignored by the local store).

        Returns:
            The written object's info, with its sha256.
        """

    @abstractmethod
    def put_file(
        self, key: str, path: str | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Upload the local file ``path`` to ``key`` atomically.

        Args:
            key: The object key.
            path: A local file.
            content_type: MIME type.

        Returns:
            The written object's info.
        """

    @abstractmethod
    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        """Write a stream of unknown length to ``key`` atomically.

        If the stream raises part-way, nothing becomes visible and a previous object under
        ``key`` stays intact; the stream's exception propagates.

        Args:
            key: The object key.
            stream: A binary file-like object or an iterable of bytes chunks.
            content_type: MIME type.

        Returns:
            The written object's info.
        """

    @abstractmethod
    def get_bytes(self, key: str, expected_sha256: str | None = None, verify: bool = True) -> bytes:
        """Read the whole object.

        Args:
            key: The object key.
            expected_sha256: If given, the data must have this sha256.
            verify: Otherwise check the data against the sha256 stored with the object.

        Returns:
            The content.

        Raises:
            ObjectNotFoundError: No such object.
            ChecksumMismatchError: The data does not match its checksum.
        """

    @abstractmethod
    def get_file(
        self,
        key: str,
        path: str | Path,
        expected_sha256: str | None = None,
        verify: bool = True,
    ) -> ObjectInfo:
        """Download the object to the local file ``path``.

        The file is written next to ``path`` and moved into place only after verification, so
        ``path`` never holds partial or unverified data.

        Args:
            key: The object key.
            path: Destination file; parent directories are created.
            expected_sha256: If given, the data must have this sha256.
            verify: Otherwise check against the stored sha256.

        Returns:
            Info of the object, with the sha256 of the data written to ``path``.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the object's size, stored sha256 and URI.

        Raises:
            ObjectNotFoundError: No such object.
        """

    def exists(self, key: str) -> bool:
        """Return whether an object exists at ``key``."""
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    @abstractmethod
    def list(
        self, prefix: str = "", recursive: bool = True, start_after: str | None = None
    ) -> list[str]:
        """List keys that start with ``prefix``, relative to the store root, sorted.

        Args:
            prefix: A key prefix (``"models/"``, ``"models/fr"``); ``""`` lists everything.
            recursive: If false, keys with a further '/' after the prefix collapse into
                "directory" entries ending in '/', as with S3's delimiter.
            start_after: Only keys after this one (in byte order), as S3's ``StartAfter``:
                on S3 the keys before it are not even sent.

        Returns:
            Sorted keys. The store's own bookkeeping (checksums, temp files) is never listed.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object at ``key``; deleting a missing key is not an error."""

    # -- convenience helpers, implemented on top of the byte-level methods -----------------

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        """Write ``obj`` as UTF-8 JSON (sorted keys, indented, so identical data hashes equal).

        Args:
            key: The object key.
            obj: A JSON-serialisable value.

        Returns:
            The written object's info.
        """
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        return self.put_bytes(key, text.encode("utf-8"), "application/json")

    def get_json(self, key: str, expected_sha256: str | None = None) -> Any:
        """Read and parse a JSON object (verified like :meth:`get_bytes`).

        Raises:
            StoreError: The object is not valid UTF-8 JSON.
        """
        data = self.get_bytes(key, expected_sha256=expected_sha256)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(
                f"{self.url_for(key)} is not valid UTF-8 JSON ({exc}); "
                "it was probably written by something else than put_json",
                uri=self.url_for(key),
            ) from exc

    def put_text(self, key: str, text: str, encoding: str = "utf-8") -> ObjectInfo:
        """Write ``text`` encoded with ``encoding``.

        Returns:
            The written object's info.
        """
        return self.put_bytes(key, text.encode(encoding), f"text/plain; charset={encoding}")

    def get_text(
        self, key: str, expected_sha256: str | None = None, encoding: str = "utf-8"
    ) -> str:
        """Read an object as text (verified like :meth:`get_bytes`).

        Raises:
            StoreError: The object cannot be decoded with ``encoding``.
        """
        data = self.get_bytes(key, expected_sha256=expected_sha256)
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise StoreError(
                f"{self.url_for(key)} is not valid {encoding} text ({exc})",
                uri=self.url_for(key),
            ) from exc


@contextlib.contextmanager
def download_to(uri: str, path: str | Path) -> Iterator[Path]:
    """A temporary file next to ``path`` to download ``uri`` into; moved onto ``path`` when
    the block ends without an error (so ``path`` never holds partial or unverified data) and
    removed in any case. File-system errors become a :class:`StoreError` naming both."""
    dest = Path(path)

    def failed(exc: OSError) -> StoreError:
        return StoreError(f"cannot download {uri} to {dest}: {exc.strerror or exc}", uri=uri)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise failed(exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as exc:
        raise failed(exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> tuple[str, int]:
    """Return the hex sha256 and the size of a local file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
