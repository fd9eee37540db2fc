"""Open a store from a URI: :func:`open_store`, and :class:`S3Config` read from the environment.

Supported URIs: ``file:///abs/dir``, a plain directory path (relative to the current
directory), ``s3://bucket[/prefix]``; ``None`` gives the embedded default ``./.fraudops/store``.
S3 settings use KServe's variable names so one Secret serves the pipeline, KServe's storage
initializer and the drift job. The environment is read only when a store is opened.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from minio import Minio

from components.store.base import InvalidKeyError, ObjectStore, StoreConfigError, validate_prefix
from components.store.local import LocalStore
from components.store.s3 import RetryPolicy, S3Store

__all__ = ["DEFAULT_STORE_DIR", "S3Config", "open_store", "parse_s3_uri"]

DEFAULT_STORE_DIR = Path(".fraudops") / "store"
"""The embedded default store, relative to the current working directory."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _flag(env: Mapping[str, str], name: str, uri: str) -> bool | None:
    value = _get(env, name)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise StoreConfigError(
        f"cannot open {uri}: {name}={value!r} is not a flag; set {name} to '1' or '0'", uri=uri
    )


@dataclass(frozen=True)
class S3Config:
    """Connection settings for an S3-compatible server.

    Attributes:
        endpoint: ``host[:port]`` of the S3 API, without scheme.
        access_key: The access key id.
        secret_key: The secret key (never shown in ``repr``).
        secure: Use HTTPS.
        verify_ssl: Verify the server's TLS certificate.
        region: Bucket region; ``None`` lets the client look it up.
        session_token: Optional temporary-credentials token.
        ca_bundle: CA file to verify the server with (default: certifi's bundle).
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for data on an open connection.
    """

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = True
    verify_ssl: bool = True
    region: str | None = None
    session_token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    @property
    def endpoint_url(self) -> str:
        """The endpoint as a URL, e.g. ``http://minio-service.kubeflow:9000``."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, uri: str = "s3://") -> S3Config:
        """Read the settings from KServe's S3 variables.

        ``S3_ENDPOINT`` (``host:port`` or an ``http(s)://`` URL; ``AWS_ENDPOINT_URL`` is the
        fallback), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional
        ``AWS_SESSION_TOKEN``, ``S3_USE_HTTPS`` (``1``/``0``; default ``1`` unless the
        endpoint URL says ``http://``), ``S3_VERIFY_SSL`` (default ``1``), ``AWS_REGION`` or
        ``AWS_DEFAULT_REGION``, ``AWS_CA_BUNDLE`` (or ``SSL_CERT_FILE``).

        Args:
            env: The variables; ``None`` reads ``os.environ`` now.
            uri: The store URI being opened, for error messages.

        Returns:
            The configuration.

        Raises:
            StoreConfigError: A variable is missing or invalid; the message names it.
        """
        env = os.environ if env is None else env
        raw = _get(env, "S3_ENDPOINT") or _get(env, "AWS_ENDPOINT_URL")
        if raw is None:
            raise StoreConfigError(
                f"cannot open {uri}: no S3 endpoint configured; set S3_ENDPOINT to the server's "
                "host:port (e.g. S3_ENDPOINT=minio-service.kubeflow:9000) or its URL "
                "(e.g. S3_ENDPOINT=http://127.0.0.1:9000)",
                uri=uri,
            )
        url_secure: bool | None = None
        endpoint = raw
        if "://" in raw:
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise StoreConfigError(
                    f"cannot open {uri}: S3_ENDPOINT={raw!r} must be host:port or an http:// or "
                    "https:// URL",
                    uri=uri,
                )
            if parts.path.strip("/") or parts.query:
                raise StoreConfigError(
                    f"cannot open {uri}: S3_ENDPOINT={raw!r} must not contain a path; put the "
                    "bucket and prefix into the store URI (s3://bucket/prefix)",
                    uri=uri,
                )
            endpoint, url_secure = parts.netloc, parts.scheme == "https"
        elif "/" in raw.rstrip("/"):
            raise StoreConfigError(
                f"cannot open {uri}: S3_ENDPOINT={raw!r} must be host:port without a path",
                uri=uri,
            )
        endpoint = endpoint.rstrip("/")
        use_https = _flag(env, "S3_USE_HTTPS", uri)
        if use_https is not None and url_secure is not None and use_https != url_secure:
            raise StoreConfigError(
                f"cannot open {uri}: S3_ENDPOINT={raw!r} contradicts "
                f"S3_USE_HTTPS={env.get('S3_USE_HTTPS')!r}; drop the scheme from S3_ENDPOINT or "
                "make them agree",
                uri=uri,
            )
        secure = use_https if use_https is not None else (url_secure is not False)
        verify = _flag(env, "S3_VERIFY_SSL", uri)
        access_key = _get(env, "AWS_ACCESS_KEY_ID")
        secret_key = _get(env, "AWS_SECRET_ACCESS_KEY")
        missing = [
            name
            for name, value in (
                ("AWS_ACCESS_KEY_ID", access_key),
                ("AWS_SECRET_ACCESS_KEY", secret_key),
            )
            if value is None
        ]
        if missing:
            raise StoreConfigError(
                f"cannot open {uri}: S3 credentials missing; set {' and '.join(missing)} "
                "(KServe's storage initializer reads the same variables from its Secret)",
                uri=uri,
            )
        return cls(
            endpoint=endpoint,
            access_key=access_key or "",
            secret_key=secret_key or "",
            secure=secure,
            verify_ssl=True if verify is None else verify,
            region=_get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION"),
            session_token=_get(env, "AWS_SESSION_TOKEN"),
            ca_bundle=_get(env, "AWS_CA_BUNDLE") or _get(env, "SSL_CERT_FILE"),
        )

    def make_client(self) -> Minio:
        """Build a ``minio.Minio`` client (no network I/O happens here).

        urllib3's own retries are switched off: :class:`RetryPolicy` in :class:`S3Store` is
        the single place that retries, with backoff.

        Raises:
            StoreConfigError: The endpoint is not a valid ``host[:port]``.
        """
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            maxsize=10,
            cert_reqs=ssl.CERT_REQUIRED if self.verify_ssl else ssl.CERT_NONE,
            ca_certs=(self.ca_bundle or certifi.where()) if self.verify_ssl else None,
            retries=False,
        )
        try:
            return Minio(
                self.endpoint,
                access_key=self.access_key,
                secret_key=self.secret_key,
                session_token=self.session_token,
                secure=self.secure,
                region=self.region,
                http_client=http,
            )
        except ValueError as exc:
            raise StoreConfigError(
                f"invalid S3 endpoint {self.endpoint!r} ({exc}); set S3_ENDPOINT to host:port",
                uri=self.endpoint_url,
            ) from exc


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")``.

    Raises:
        StoreConfigError: No bucket, or an invalid prefix.
    """
    parts = urlsplit(uri)
    bucket = parts.netloc
    prefix = unquote(parts.path).strip("/")
    if parts.scheme.lower() != "s3" or not bucket:
        raise StoreConfigError(
            f"invalid S3 store URI {uri!r}: expected s3://bucket or s3://bucket/prefix", uri=uri
        )
    try:
        validate_prefix(prefix)
    except InvalidKeyError as exc:
        raise StoreConfigError(f"invalid S3 store URI {uri!r}: {exc}", uri=uri) from exc
    return bucket, prefix


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise StoreConfigError(
            f"invalid file URI {uri!r}: file URIs must be absolute (file:///abs/dir); use a plain "
            "path for a directory relative to the current one",
            uri=uri,
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StoreConfigError(f"invalid file URI {uri!r}: expected file:///abs/dir", uri=uri)
    return path


def open_store(
    uri: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    create_bucket: bool = True,
    retry: RetryPolicy | None = None,
) -> ObjectStore:
    """Open the object store a URI points to.

    Args:
        uri: ``file:///abs/dir``, a plain path (relative paths resolve against the current
            directory), ``s3://bucket[/prefix]``, or ``None``/``""`` for the embedded default
            ``./.fraudops/store``.
        env: Environment for S3 settings (see :meth:`S3Config.from_env`); ``None`` reads
            ``os.environ`` at call time.
        create_bucket: S3 only: create the bucket on the first write if missing.
        retry: S3 only: retry policy for transient failures.

    Returns:
        A :class:`LocalStore` or an :class:`S3Store`. Nothing is created or contacted yet.

    Raises:
        StoreConfigError: Unsupported scheme, malformed URI, or missing/invalid S3 settings.
    """
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        return LocalStore(Path.cwd() / DEFAULT_STORE_DIR)
    if isinstance(uri, Path):
        return LocalStore(uri)
    text = uri.strip()
    match = _SCHEME.match(text)
    if match is None:
        return LocalStore(text)
    scheme = match.group(1).lower()
    if scheme == "file":
        return LocalStore(_file_uri_path(text))
    if scheme == "s3":
        bucket, prefix = parse_s3_uri(text)
        config = S3Config.from_env(env, uri=text)
        return S3Store(
            bucket,
            prefix,
            client=config.make_client(),
            endpoint=config.endpoint_url,
            create_bucket=create_bucket,
            retry=retry,
        )
    raise StoreConfigError(
        f"unsupported store URI {text!r}: scheme {scheme!r} is not supported; use "
        "file:///abs/dir, a plain directory path, or s3://bucket/prefix",
        uri=text,
    )
