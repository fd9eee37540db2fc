""":class:`LocalStore`: an object store in a local directory.

Layout under the root::

    <root>/<key>                    the objects
    <root>/.meta/sha256/<key>       the sha256 of each object (hex, one line)
    <root>/.tmp/                    temp files of writes in progress (same filesystem)

A write goes to a temp file in ``.tmp/``, is fsynced, then ``os.replace``-d into place, so a
reader sees the old object or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from components.store.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ChecksumMismatchError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    StorePermissionError,
    check_checksum,
    download_to,
    iter_chunks,
    validate_key,
    validate_prefix,
)

__all__ = ["META_DIR", "TMP_DIR", "LocalStore"]

META_DIR = ".meta"
"""Hidden directory (under the root) holding the checksum sidecars, ``sha256/<key>``."""

TMP_DIR = ".tmp"
"""Hidden directory (under the root) holding temp files of writes in progress."""

_INSTALL_ATTEMPTS = 3


def _fsync_dir(path: Path) -> None:
    """Best-effort fsync of a directory so a rename survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    """An :class:`ObjectStore` in a local directory, created lazily on the first write.

    Args:
        root: The store directory; relative paths resolve against the current directory.

    Attributes:
        root: The absolute store directory.
        uri: ``file://`` URI of ``root``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        self.uri = self.root.as_uri()

    # -- paths --------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        # Mirrors the key's path, so any set of keys that fits the data tree fits here too.
        return self.root.joinpath(META_DIR, "sha256", *key.split("/"))

    def url_for(self, key: str) -> str:
        """Return ``file:///<root>/<key>``."""
        return self._path(key).as_uri()

    # -- errors -------------------------------------------------------------------------

    def _os_error(self, exc: OSError, uri: str, action: str) -> StoreError:
        """Translate an OSError into a StoreError naming the URI and a fix."""
        where = f" ({exc.filename})" if exc.filename else ""
        if isinstance(exc, PermissionError):
            return StorePermissionError(
                f"cannot {action} {uri}: permission denied{where}. Give the user running this "
                f"process read/write access to {self.root}, or use a store in a writable "
                "directory.",
                uri=uri,
            )
        blocker = next(
            (p for p in (self.root, *self.root.parents) if p.exists() and not p.is_dir()), None
        )
        if blocker is not None:
            return StoreError(
                f"cannot {action} {uri}: {blocker} is a file, so the store root {self.root} "
                "cannot be a directory; point the store at a directory.",
                uri=uri,
            )
        if isinstance(exc, NotADirectoryError | FileExistsError):
            return StoreError(
                f"cannot {action} {uri}: a parent of the path is an existing object (a file), "
                f"not a directory{where}. A local store cannot hold both 'a' and 'a/b'; rename "
                "one of the keys.",
                uri=uri,
            )
        if isinstance(exc, IsADirectoryError):
            return StoreError(
                f"cannot {action} {uri}: the key is a prefix (directory) of other keys{where}; "
                "a local store cannot hold both 'a' and 'a/b'; rename one of the keys.",
                uri=uri,
            )
        if exc.errno == errno.ENOSPC:
            return StoreError(
                f"cannot {action} {uri}: no space left on the device holding {self.root}; "
                "free space or move the store.",
                uri=uri,
            )
        return StoreError(f"cannot {action} {uri}: {exc.strerror or exc}{where}", uri=uri)

    def _not_found(self, key: str, uri: str) -> ObjectNotFoundError:
        path = self._path(key)
        hint = (
            "it is a prefix (directory) of other keys; list it with store.list(...)"
            if path.is_dir()
            else "check the key, or list the store with store.list(...)"
        )
        return ObjectNotFoundError(f"no such object: {uri} ({hint})", uri=uri)

    # -- writes -------------------------------------------------------------------------

    def _tempfile(self) -> tuple[int, Path]:
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-", suffix=".part")
        return fd, Path(name)

    def _install(self, tmp: Path, dest: Path) -> None:
        """Move ``tmp`` to ``dest`` atomically, creating parents (retrying if pruned meanwhile)."""
        for attempt in range(1, _INSTALL_ATTEMPTS + 1):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the freshly created parent; create it again.
                if attempt == _INSTALL_ATTEMPTS or not tmp.exists():
                    raise
        _fsync_dir(dest.parent)

    def _sidecar_tempfile(self, sha256: str) -> Path:
        fd, tmp = self._tempfile()
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(sha256 + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _write(self, key: str, chunks: Callable[[], Iterable[bytes]]) -> ObjectInfo:
        uri = self.url_for(key)
        dest = self._path(key)
        try:
            fd, tmp = self._tempfile()
        except OSError as exc:
            raise self._os_error(exc, uri, "write") from exc
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks():
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            sha256 = digest.hexdigest()
            meta_tmp = self._sidecar_tempfile(sha256)
            try:
                # Both files are complete on disk; now two renames: the data, then its
                # checksum (see docs/storage.md, "Atomicity").
                self._install(tmp, dest)
                self._install(meta_tmp, self._meta_path(key))
            finally:
                meta_tmp.unlink(missing_ok=True)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._os_error(exc, uri, "write") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key=key, size=size, sha256=sha256, uri=uri)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Write ``data`` to ``key`` atomically (``content_type`` is not kept locally)."""
        view = memoryview(data)
        return self._write(
            key, lambda: (view[i : i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE))
        )

    def put_file(
        self, key: str, path: str | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Copy the local file ``path`` to ``key`` atomically."""
        uri = self.url_for(key)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(
                f"cannot write {uri}: cannot read the source file {path}: {exc.strerror or exc}",
                uri=uri,
            ) from exc
        with source:
            return self._write(key, lambda: iter_chunks(source))

    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> ObjectInfo:
        """Write a stream to ``key`` atomically; nothing is visible if the stream fails."""
        return self._write(key, lambda: iter_chunks(stream))

    # -- reads --------------------------------------------------------------------------

    def _read_sidecar(self, key: str) -> str | None:
        try:
            return self._meta_path(key).read_text(encoding="ascii").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError):
            return "<unreadable checksum file>"

    def _read_checked(
        self,
        key: str,
        new_sink: Callable[[], AbstractContextManager[BinaryIO]],
        expected_sha256: str | None,
        verify: bool,
    ) -> tuple[str, int]:
        """Copy the object into a fresh sink and verify it; return (sha256, size).

        Against the stored checksum the read is tried twice: a reader racing an overwrite of
        the same key can see the new data with the old sidecar (or the reverse) once.
        """
        uri = self.url_for(key)
        path = self._path(key)
        for attempt in (1, 2):
            digest = hashlib.sha256()
            size = 0
            try:
                with open(path, "rb") as src, new_sink() as sink:
                    while chunk := src.read(CHUNK_SIZE):
                        sink.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
                if exc.filename is not None and Path(exc.filename) != path:
                    raise self._os_error(exc, uri, "read") from exc
                raise self._not_found(key, uri) from exc
            except OSError as exc:
                raise self._os_error(exc, uri, "read") from exc
            actual = digest.hexdigest()
            stored = self._read_sidecar(key) if verify and expected_sha256 is None else None
            try:
                check_checksum(uri, actual, expected_sha256, stored)
            except ChecksumMismatchError:
                if expected_sha256 is not None or attempt == 2:
                    raise
                continue
            return actual, size
        raise AssertionError("unreachable")  # pragma: no cover

    def get_bytes(self, key: str, expected_sha256: str | None = None, verify: bool = True) -> bytes:
        """Read the object, verifying its sha256 (see :meth:`ObjectStore.get_bytes`)."""
        buffers: list[io.BytesIO] = []

        def sink() -> AbstractContextManager[BinaryIO]:
            buffers.append(io.BytesIO())
            return contextlib.nullcontext(buffers[-1])

        self._read_checked(key, sink, expected_sha256, verify)
        return buffers[-1].getvalue()

    def get_file(
        self,
        key: str,
        path: str | Path,
        expected_sha256: str | None = None,
        verify: bool = True,
    ) -> ObjectInfo:
        """Copy the object to ``path``; ``path`` is replaced only once the data is verified."""
        uri = self.url_for(key)
        with download_to(uri, path) as tmp:
            sha256, size = self._read_checked(
                key, functools.partial(open, tmp, "wb"), expected_sha256, verify
            )
        return ObjectInfo(key=key, size=size, sha256=sha256, uri=uri)

    def stat(self, key: str) -> ObjectInfo:
        """Return size and stored sha256 of the object (``sha256=""`` if none was stored)."""
        uri = self.url_for(key)
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise self._not_found(key, uri) from exc
        except OSError as exc:
            raise self._os_error(exc, uri, "stat") from exc
        if not path.is_file():
            raise self._not_found(key, uri)
        return ObjectInfo(key=key, size=st.st_size, sha256=self._read_sidecar(key) or "", uri=uri)

    def list(
        self, prefix: str = "", recursive: bool = True, start_after: str | None = None
    ) -> list[str]:
        """List keys under ``prefix``, sorted; ``.meta/`` and ``.tmp/`` are never listed."""
        keys = self._list(prefix, recursive)
        if start_after is None:
            return keys
        # keys are text; S3 compares their UTF-8 bytes, which orders as the code points do
        return [k for k in keys if k > start_after]

    def _list(self, prefix: str, recursive: bool) -> list[str]:
        validate_prefix(prefix)
        directory = prefix.rpartition("/")[0]
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not start.is_dir():
            return []
        if not recursive:  # one directory read, not a walk of everything below it
            return self._list_level(start, prefix, directory)
        keys: list[str] = []

        def on_error(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # vanished during a concurrent delete
                raise self._os_error(exc, self.uri, "list")

        for dirpath, dirnames, filenames in os.walk(start, onerror=on_error):
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d not in (META_DIR, TMP_DIR)]
                rel_prefix = ""
            else:
                rel_prefix = rel.replace(os.sep, "/") + "/"
            keys.extend(
                rel_prefix + name for name in filenames if (rel_prefix + name).startswith(prefix)
            )
        return sorted(keys)

    def _list_level(self, start: Path, prefix: str, directory: str) -> list[str]:
        """:meth:`list` with ``recursive=False``: the keys and "directories" (those holding a
        key somewhere below, as S3 lists them) in ``start`` that begin with ``prefix``."""
        at = directory + "/" if directory else ""
        keys = []
        try:
            entries = list(os.scandir(start))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._os_error(exc, self.uri, "list") from exc
        for entry in entries:
            key = at + entry.name
            if not key.startswith(prefix) or (not at and entry.name in (META_DIR, TMP_DIR)):
                continue
            if not entry.is_dir():
                keys.append(key)
            elif any(files for _, _, files in os.walk(entry.path)):
                keys.append(key + "/")
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Delete the object and its checksum; prune directories left empty."""
        uri = self.url_for(key)
        path = self._path(key)
        if path.is_dir():
            return
        try:
            path.unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
        except NotADirectoryError:
            return
        except OSError as exc:
            raise self._os_error(exc, uri, "delete") from exc
        self._prune(path.parent, self.root)
        self._prune(self._meta_path(key).parent, self.root / META_DIR / "sha256")

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Remove empty directories from ``directory`` up to (not including) ``stop``."""
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
