"""Object store: model bundles, logs and reports in a local directory or an S3/MinIO bucket.

Open one with :func:`open_store` (``file://``, a plain path, or ``s3://bucket/prefix``). Writes
are atomic and checksummed (sha256); reads verify. See ``docs/storage.md``.
"""

from components.store.base import (
    ChecksumMismatchError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreConfigError,
    StoreError,
    StorePermissionError,
    StoreUnavailableError,
    validate_key,
)
from components.store.local import LocalStore
from components.store.s3 import RetryPolicy, S3Store
from components.store.uri import DEFAULT_STORE_DIR, S3Config, open_store, parse_s3_uri

__all__ = [
    "DEFAULT_STORE_DIR",
    "ChecksumMismatchError",
    "InvalidKeyError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "RetryPolicy",
    "S3Config",
    "S3Store",
    "StoreConfigError",
    "StoreError",
    "StorePermissionError",
    "StoreUnavailableError",
    "open_store",
    "parse_s3_uri",
    "validate_key",
]
