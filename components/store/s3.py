""":class:`S3Store`: an object store in an S3 bucket (MinIO, AWS S3, ...) via the ``minio`` client.

Each object's sha256 travels as user metadata (``x-amz-meta-sha256``) in the same PUT as the
data. Writes are a single PUT, or a multipart upload that only becomes visible when completed
(and is aborted on failure). Transient failures are retried with exponential backoff
(:class:`RetryPolicy`, using ``tenacity``); everything else becomes a :class:`StoreError`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, MIN_PART_SIZE, check_bucket_name
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from components.retry import RetryPolicy
from components.store.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreConfigError,
    StoreError,
    StorePermissionError,
    StoreUnavailableError,
    check_checksum,
    download_to,
    iter_chunks,
    sha256_file,
    sha256_hex,
    validate_key,
    validate_prefix,
)

__all__ = [
    "SHA256_HEADER",
    "TRANSIENT_HTTP_STATUSES",
    "TRANSIENT_S3_CODES",
    "RetryPolicy",
    "S3Store",
    "is_transient",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SHA256_META = "sha256"
SHA256_HEADER = "x-amz-meta-sha256"
"""The response header carrying the sha256 stored with each object."""

TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable"}
)
TRANSIENT_HTTP_STATUSES = frozenset({500, 502, 503, 504})
_TRANSIENT_NETWORK_ERRORS = (
    urllib3.exceptions.TimeoutError,  # connect/read timeouts, refused connections, DNS
    urllib3.exceptions.ProtocolError,  # connection reset/aborted mid-request
    urllib3.exceptions.IncompleteRead,
    urllib3.exceptions.InvalidChunkLength,
    ConnectionError,
    TimeoutError,
)

_PERMISSION_FIXES = {
    "AccessDenied": "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that the bucket policy "
    "(or the MinIO user's policy) allows s3:GetObject, s3:PutObject, s3:DeleteObject and "
    "s3:ListBucket on this bucket",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID: the server does not know this access key "
    "(wrong key, or S3_ENDPOINT points at another server)",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY (and AWS_REGION if set): the server "
    "rejected the request signature",
    "ExpiredToken": "refresh the credentials: AWS_SESSION_TOKEN has expired",
    "InvalidToken": "check AWS_SESSION_TOKEN",
    "AllAccessDisabled": "access to this bucket is disabled; ask its owner",
    "AccountProblem": "the account has a problem; ask the S3 provider",
}
_OTHER_FIXES = {
    "RequestTimeTooSkewed": "sync this machine's clock (NTP); S3 rejects requests whose time "
    "is more than 15 minutes off",
    "InvalidBucketName": "fix the bucket name in the store URI (3-63 lowercase letters, digits, "
    "'.' and '-')",
    "EntityTooLarge": "the object is larger than the server accepts",
    "AuthorizationHeaderMalformed": "set AWS_REGION to the bucket's region",
}
_NOT_FOUND_ACTIONS = frozenset({"read", "stat", "list", "delete"})


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, S3Error):
        return getattr(exc.response, "status", None)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", None)
    return None


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is worth retrying.

    Transient: network errors and timeouts from urllib3, HTTP 500/502/503/504, and the S3 codes
    in :data:`TRANSIENT_S3_CODES`. TLS errors, 4xx and other S3 codes are not.

    Args:
        exc: An exception raised by the minio client.

    Returns:
        True if the operation should be retried.
    """
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return is_transient(exc.reason)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return False
    if isinstance(exc, S3Error) and exc.code in TRANSIENT_S3_CODES:
        return True
    if _status_of(exc) in TRANSIENT_HTTP_STATUSES:
        return True
    return isinstance(exc, _TRANSIENT_NETWORK_ERRORS)


def _is_ssl_error(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return isinstance(exc.reason, urllib3.exceptions.SSLError)
    return isinstance(exc, urllib3.exceptions.SSLError)


class S3Store(ObjectStore):
    """An :class:`ObjectStore` under ``s3://bucket/prefix``.

    Usually built by :func:`components.store.open_store` from an ``s3://`` URI and the
    KServe-style environment variables.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket that acts as the store root (may be empty).
        client: A configured ``minio.Minio`` client. Give it an ``http_client`` whose urllib3
            retries are off (as :meth:`S3Config.make_client` does), so :class:`RetryPolicy`
            alone decides about retries.
        endpoint: The endpoint URL, used in error messages.
        create_bucket: Create the bucket on the first write if it does not exist.
        retry: Retry policy for transient failures.
        part_size: Objects larger than this are uploaded in parts of this size (multipart).
        spool_dir: Directory for buffering :meth:`put_stream` data (default: system temp).
        spool_memory: :meth:`put_stream` data up to this size is buffered in memory.

    Attributes:
        client: The minio client.
        bucket: The bucket.
        prefix: The root prefix, without leading/trailing '/'.
        uri: ``s3://bucket[/prefix]``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Minio,
        endpoint: str = "",
        create_bucket: bool = True,
        retry: RetryPolicy | None = None,
        part_size: int = 64 * 1024 * 1024,
        spool_dir: str | Path | None = None,
        spool_memory: int = 8 * 1024 * 1024,
    ) -> None:
        prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise StoreConfigError(
                f"invalid bucket name in {self.uri}: {exc}; {_OTHER_FIXES['InvalidBucketName']}",
                uri=self.uri,
            ) from exc
        if prefix:
            validate_prefix(prefix)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 5 MiB and 5 GiB, got {part_size}")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or "the S3 endpoint"
        self.create_bucket = create_bucket
        self.retry = retry or RetryPolicy()
        self.part_size = part_size
        self.spool_dir = spool_dir
        self.spool_memory = spool_memory
        self._bucket_ready = False
        self._lock = threading.Lock()

    # -- names --------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        """Return ``s3://bucket/prefix/key``."""
        return f"s3://{self.bucket}/{self._name(validate_key(key))}"

    # -- retries and errors -------------------------------------------------------------

    def _run(self, fn: Callable[[], T], uri: str, action: str) -> T:
        """Call ``fn`` with retries on transient errors; translate failures to StoreError."""
        policy = self.retry

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s %s: transient error (%s), retry %d/%d in %.2fs",
                action,
                uri,
                exc,
                state.attempt_number,
                policy.attempts - 1,
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.wait, max=policy.max_wait)
            + wait_random(0, policy.wait / 2),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except StoreError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._translate(exc, uri, action) from exc

    def _translate(self, exc: BaseException, uri: str, action: str) -> StoreError:
        """Turn a minio/urllib3/OS error into a StoreError naming the URI and a fix."""
        at = f"at {self.endpoint}"
        tries = f"after {self.retry.attempts} attempt(s)"
        if isinstance(exc, S3Error):
            code = exc.code or "UnknownError"
            detail = f"S3 error {code}" + (f" ({exc.message})" if exc.message else "")
            if code == "NoSuchKey":
                return ObjectNotFoundError(
                    f"no such object: {uri} ({detail}); check the key, or list the prefix with "
                    "store.list(...)",
                    uri=uri,
                )
            if code == "NoSuchBucket":
                message = (
                    f"cannot {action} {uri}: bucket {self.bucket!r} does not exist {at} "
                    f"({detail}); check the bucket in the URI, create it (e.g. `mc mb "
                    f"<alias>/{self.bucket}`), or open the store with create_bucket=True"
                )
                if action in _NOT_FOUND_ACTIONS:
                    return ObjectNotFoundError(message, uri=uri)
                return StoreError(message, uri=uri)
            if code in _PERMISSION_FIXES:
                return StorePermissionError(
                    f"cannot {action} {uri}: {detail} {at}; {_PERMISSION_FIXES[code]}", uri=uri
                )
            if is_transient(exc):
                return StoreUnavailableError(
                    f"cannot {action} {uri}: {detail} {at} persisted {tries}; the server is "
                    "overloaded or unhealthy: try again later or allow more retry attempts",
                    uri=uri,
                )
            fix = _OTHER_FIXES.get(code)
            return StoreError(
                f"cannot {action} {uri}: {detail} {at}" + (f"; {fix}" if fix else ""), uri=uri
            )
        if isinstance(exc, ServerError | InvalidResponseError):
            if is_transient(exc):
                return StoreUnavailableError(
                    f"cannot {action} {uri}: HTTP {_status_of(exc)} {at} persisted {tries}; the "
                    "server is overloaded or unhealthy: try again later or allow more retries",
                    uri=uri,
                )
            return StoreError(
                f"cannot {action} {uri}: unexpected response {at} ({exc}); check that S3_ENDPOINT "
                "points at the S3 API port of the server (not e.g. the MinIO console)",
                uri=uri,
            )
        if _is_ssl_error(exc):
            return StoreError(
                f"cannot {action} {uri}: TLS handshake with {self.endpoint} failed ({exc}); if "
                "the server speaks plain HTTP set S3_USE_HTTPS=0, if it uses a private CA set "
                "AWS_CA_BUNDLE to the CA file (S3_VERIFY_SSL=0 disables verification)",
                uri=uri,
            )
        if is_transient(exc):
            return StoreUnavailableError(
                f"cannot {action} {uri}: cannot reach {self.endpoint} {tries} "
                f"({type(exc).__name__}: {exc}); check S3_ENDPOINT and S3_USE_HTTPS and that "
                "the server is up",
                uri=uri,
            )
        return StoreError(f"cannot {action} {uri}: {type(exc).__name__}: {exc}", uri=uri)

    def _ensure_bucket(self) -> None:
        """Create the bucket once per store if ``create_bucket`` is set and it is missing."""
        if self._bucket_ready or not self.create_bucket:
            return
        with self._lock:
            if self._bucket_ready:
                return

            def create() -> None:
                if self.client.bucket_exists(self.bucket):
                    return
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

            try:
                self._run(create, f"s3://{self.bucket}", "create bucket")
            except StorePermissionError as exc:
                # Credentials limited to object operations cannot check buckets; the write
                # itself reports a missing bucket clearly.
                log.debug("cannot check/create bucket %s: %s", self.bucket, exc)
            self._bucket_ready = True

    # -- writes -------------------------------------------------------------------------

    def _upload(
        self,
        key: str,
        source: Callable[[], AbstractContextManager[BinaryIO]],
        size: int,
        sha256: str,
        content_type: str,
    ) -> ObjectInfo:
        uri = self.url_for(key)
        self._ensure_bucket()

        def put() -> None:
            with source() as data:
                self.client.put_object(
                    self.bucket,
                    self._name(key),
                    data,
                    size,
                    content_type=content_type or DEFAULT_CONTENT_TYPE,
                    metadata={SHA256_META: sha256},
                    part_size=self.part_size,
                    num_parallel_uploads=1,
                )

        self._run(put, uri, "write")
        return ObjectInfo(key=key, size=size, sha256=sha256, uri=uri)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Upload ``data`` in one PUT (multipart above ``part_size``) with its sha256."""
        self.url_for(key)
        data = bytes(data)
        return self._upload(
            key, lambda: io.BytesIO(data), len(data), sha256_hex(data), content_type
        )

    def put_file(
        self, key: str, path: str | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Upload a local file; it is hashed first, so it must not change during the upload."""
        uri = self.url_for(key)
        try:
            sha256, size = sha256_file(path)
        except OSError as exc:
            raise StoreError(
                f"cannot write {uri}: cannot read the source file {path}: {exc.strerror or exc}",
                uri=uri,
            ) from exc
        return self._upload(key, functools.partial(open, path, "rb"), size, sha256, content_type)

    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        """Buffer the stream (memory, then a temp file), then upload it with retries.

        Buffering makes the upload retryable (a one-shot stream cannot be replayed) and gives
        the sha256 before the upload starts, so it goes into the same request as the data.
        If the stream raises, nothing is sent at all.
        """
        uri = self.url_for(key)
        with tempfile.SpooledTemporaryFile(max_size=self.spool_memory, dir=self.spool_dir) as spool:
            digest = hashlib.sha256()
            size = 0
            try:
                for chunk in iter_chunks(stream):
                    spool.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            except OSError as exc:
                where = self.spool_dir or tempfile.gettempdir()
                raise StoreError(
                    f"cannot write {uri}: buffering the stream failed ({exc}); check free space "
                    f"in {where} or pass spool_dir",
                    uri=uri,
                ) from exc

            def source() -> AbstractContextManager[BinaryIO]:
                spool.seek(0)
                return nullcontext(spool)  # type: ignore[arg-type]

            return self._upload(key, source, size, digest.hexdigest(), content_type)

    # -- reads --------------------------------------------------------------------------

    def get_bytes(self, key: str, expected_sha256: str | None = None, verify: bool = True) -> bytes:
        """Download the object and verify it (see :meth:`ObjectStore.get_bytes`)."""
        uri = self.url_for(key)

        def get() -> tuple[bytes, str | None]:
            response = self.client.get_object(self.bucket, self._name(key))
            try:
                return response.read(decode_content=False), response.headers.get(SHA256_HEADER)
            finally:
                response.close()
                response.release_conn()

        data, stored = self._run(get, uri, "read")
        check_checksum(uri, sha256_hex(data), expected_sha256, stored if verify else None)
        return data

    def get_file(
        self,
        key: str,
        path: str | Path,
        expected_sha256: str | None = None,
        verify: bool = True,
    ) -> ObjectInfo:
        """Download to a temp file next to ``path``, verify, then move it into place."""
        uri = self.url_for(key)
        with download_to(uri, path) as tmp:

            def get() -> tuple[str, int, str | None]:
                response = self.client.get_object(self.bucket, self._name(key))
                try:
                    digest = hashlib.sha256()
                    size = 0
                    with open(tmp, "wb") as fh:
                        for chunk in response.stream(CHUNK_SIZE, decode_content=False):
                            fh.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                    return digest.hexdigest(), size, response.headers.get(SHA256_HEADER)
                finally:
                    response.close()
                    response.release_conn()

            actual, size, stored = self._run(get, uri, "read")
            check_checksum(uri, actual, expected_sha256, stored if verify else None)
        return ObjectInfo(key=key, size=size, sha256=actual, uri=uri)

    def stat(self, key: str) -> ObjectInfo:
        """HEAD the object: size and stored sha256 (``""`` if it was written by another tool)."""
        uri = self.url_for(key)
        obj = self._run(lambda: self.client.stat_object(self.bucket, self._name(key)), uri, "stat")
        headers = obj.metadata or {}
        return ObjectInfo(
            key=key, size=obj.size or 0, sha256=headers.get(SHA256_HEADER, "") or "", uri=uri
        )

    def list(
        self, prefix: str = "", recursive: bool = True, start_after: str | None = None
    ) -> list[str]:
        """List keys under ``prefix`` (a missing bucket lists as empty)."""
        validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        full = root + prefix

        def names() -> list[str]:
            objects = self.client.list_objects(
                self.bucket,
                prefix=full or None,
                recursive=recursive,
                start_after=None if start_after is None else root + start_after,
            )
            return [obj.object_name or "" for obj in objects]

        try:
            found = self._run(names, self.uri + ("/" + prefix if prefix else ""), "list")
        except ObjectNotFoundError:
            return []
        keys = (name[len(root) :] for name in found if name.startswith(full))
        if recursive:  # skip "directory marker" objects some tools create
            return sorted(k for k in keys if k and not k.endswith("/"))
        return sorted(k for k in keys if k and k != prefix)

    def delete(self, key: str) -> None:
        """Delete the object; a missing object or bucket is not an error."""
        uri = self.url_for(key)
        with suppress(ObjectNotFoundError):
            self._run(
                lambda: self.client.remove_object(self.bucket, self._name(key)), uri, "delete"
            )
