"""Object store tests: the same tests run on a local directory, on moto's S3 server on
loopback, and on a real MinIO when MINIO_ENDPOINT is set."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from components.store import (
    DEFAULT_STORE_DIR,
    ChecksumMismatchError,
    InvalidKeyError,
    LocalStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    RetryPolicy,
    S3Config,
    S3Store,
    StoreConfigError,
    StoreError,
    StorePermissionError,
    StoreUnavailableError,
    open_store,
    parse_s3_uri,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_RETRY = RetryPolicy(attempts=3, wait=0.001, max_wait=0.01)
MIB = 1024 * 1024
CREDS = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- servers and stores ---------------------------------------------------------------------


def _minio_env() -> dict[str, str]:
    endpoint = os.environ.get("MINIO_ENDPOINT", "")
    if not endpoint:
        pytest.skip("set MINIO_ENDPOINT (and MINIO_ACCESS_KEY/MINIO_SECRET_KEY) to test MinIO")
    if "://" not in endpoint:
        use_https = os.environ.get("S3_USE_HTTPS", "0") in ("1", "true")
        endpoint = ("https://" if use_https else "http://") + endpoint
    access = os.environ.get("MINIO_ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("MINIO_SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    env = {
        "S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }
    if "S3_VERIFY_SSL" in os.environ:
        env["S3_VERIFY_SSL"] = os.environ["S3_VERIFY_SSL"]
    return env


def _empty_bucket(store: S3Store) -> None:
    client = store.client
    if not client.bucket_exists(store.bucket):
        return
    for obj in client.list_objects(store.bucket, recursive=True):
        client.remove_object(store.bucket, obj.object_name)
    client.remove_bucket(store.bucket)


def _open_s3(kind: str, request: pytest.FixtureRequest) -> S3Store:
    env = _minio_env() if kind == "minio" else request.getfixturevalue("s3_env")
    bucket = f"fraudops-test-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}/root/pfx", env=env, retry=FAST_RETRY)
    assert isinstance(store, S3Store)
    return store


S3_KINDS = ["moto", pytest.param("minio", marks=pytest.mark.minio)]


@pytest.fixture(params=["local", *S3_KINDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """The same tests against LocalStore, moto's S3 server and (if configured) MinIO."""
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    s3 = _open_s3(request.param, request)
    yield s3
    if request.param == "minio":
        _empty_bucket(s3)


@pytest.fixture(params=S3_KINDS)
def s3_store(request: pytest.FixtureRequest) -> Iterator[S3Store]:
    """S3 backends only (fault injection into the minio client's HTTP layer)."""
    s3 = _open_s3(request.param, request)
    s3.put_bytes("warm-up", b"")  # bucket created, connection pool warm
    yield s3
    if request.param == "minio":
        _empty_bucket(s3)


def tamper(store: ObjectStore, key: str, data: bytes) -> None:
    """Change an object's bytes behind the store's back, leaving its stored checksum as is."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
        return
    assert isinstance(store, S3Store)
    stored = store.stat(key).sha256
    name = f"{store.prefix}/{key}" if store.prefix else key
    store.client.put_object(
        store.bucket, name, io.BytesIO(data), len(data), metadata={"sha256": stored}
    )


def failing_stream(mib: int) -> Iterator[bytes]:
    """Yield ``mib`` MiB, then fail like a dropped upstream connection."""
    for _ in range(mib):
        yield b"x" * MIB
    raise RuntimeError("upstream connection lost")


# -- round trips ----------------------------------------------------------------------------


def test_bytes_round_trip(store: ObjectStore) -> None:
    data = os.urandom(3000)
    info = store.put_bytes("models/fraud/1/model.json", data)
    assert info == ObjectInfo(
        key="models/fraud/1/model.json",
        size=3000,
        sha256=sha(data),
        uri=store.url_for("models/fraud/1/model.json"),
    )
    assert store.get_bytes("models/fraud/1/model.json") == data
    assert store.stat("models/fraud/1/model.json") == info
    assert store.exists("models/fraud/1/model.json")


def test_empty_object(store: ObjectStore) -> None:
    assert store.put_bytes("empty", b"").sha256 == sha(b"")
    assert store.get_bytes("empty") == b""
    assert store.stat("empty").size == 0


def test_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(MIB + 123))
    info = store.put_file("bundles/b.bin", source)
    assert info.sha256 == sha(source.read_bytes())
    dest = tmp_path / "out" / "nested" / "b.bin"
    got = store.get_file("bundles/b.bin", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert got == info
    assert not [p for p in dest.parent.iterdir() if p.name != "b.bin"], "no temp file left"


def test_json_and_text_round_trip(store: ObjectStore) -> None:
    manifest = {"files": {"model.json": "ab" * 32}, "created_at": "2024-01-01T00:00:00Z", "n": 3}
    info = store.put_json("m/MANIFEST.json", manifest)
    assert store.get_json("m/MANIFEST.json") == manifest
    assert store.get_json("m/MANIFEST.json", expected_sha256=info.sha256) == manifest
    assert store.put_json("m/again.json", dict(reversed(manifest.items()))).sha256 == info.sha256
    store.put_text("m/card.md", "# Model card\nfraud ✓\n")
    assert store.get_text("m/card.md") == "# Model card\nfraud ✓\n"


def test_get_json_of_non_json_names_uri(store: ObjectStore) -> None:
    store.put_bytes("x.json", b"\xff not json")
    with pytest.raises(StoreError, match=re.escape(store.url_for("x.json"))):
        store.get_json("x.json")


@pytest.mark.parametrize("kind", ["generator", "file-like"])
def test_stream_round_trip(store: ObjectStore, kind: str) -> None:
    chunks = [os.urandom(MIB) for _ in range(3)] + [b"tail"]
    data = b"".join(chunks)
    stream: Any = iter(chunks) if kind == "generator" else io.BytesIO(data)
    info = store.put_stream("logs/2024-01-01/part-0.jsonl", stream)
    assert info.size == len(data)
    assert info.sha256 == sha(data)
    assert store.stat("logs/2024-01-01/part-0.jsonl").sha256 == sha(data)
    assert store.get_bytes("logs/2024-01-01/part-0.jsonl") == data


def test_put_stream_rejects_bytes(store: ObjectStore) -> None:
    with pytest.raises(TypeError, match="put_bytes"):
        store.put_stream("k", b"not a stream")  # type: ignore[arg-type]


def test_overwrite_replaces_content_and_checksum(store: ObjectStore) -> None:
    store.put_bytes("alias/champion", b"v1")
    info = store.put_bytes("alias/champion", b"version-2")
    assert store.get_bytes("alias/champion") == b"version-2"
    assert store.stat("alias/champion") == info
    assert info.sha256 == sha(b"version-2")
    assert store.list() == ["alias/champion"]


# -- listing, existence, deletion -----------------------------------------------------------


def test_list_is_sorted_and_filters_by_prefix(store: ObjectStore) -> None:
    for key in ["b", "a/sub/3", "a/2", "ab", "a/1", "models/fraud/1/MANIFEST.json"]:
        store.put_bytes(key, key.encode())
    assert store.list() == ["a/1", "a/2", "a/sub/3", "ab", "b", "models/fraud/1/MANIFEST.json"]
    assert store.list("a/") == ["a/1", "a/2", "a/sub/3"]
    assert store.list("a") == ["a/1", "a/2", "a/sub/3", "ab"]
    assert store.list("models/fraud/") == ["models/fraud/1/MANIFEST.json"]
    assert store.list("missing/") == []
    assert store.list(recursive=False) == ["a/", "ab", "b", "models/"]
    assert store.list("a/", recursive=False) == ["a/1", "a/2", "a/sub/"]


def test_list_after_a_key_skips_it_and_every_key_before(store: ObjectStore) -> None:
    for key in ("log/d/120000-a", "log/d/120000-b", "log/d/120500-a", "log/e/000000-a"):
        store.put_bytes(key, b"x")
    assert store.list("log/d/", start_after="log/d/120000-a") == [
        "log/d/120000-b",
        "log/d/120500-a",
    ]
    assert store.list("log/d/", start_after="log/d/1202") == ["log/d/120500-a"]  # not a key
    assert store.list("log/d/", start_after="log/d/2") == []
    assert store.list("log/", start_after="log/d/120500-a") == ["log/e/000000-a"]


def test_list_on_empty_store(store: ObjectStore) -> None:
    assert store.list() == []
    assert not store.exists("anything")


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("a/b/c", b"1")
    store.put_bytes("a/d", b"2")
    store.delete("a/b/c")
    assert not store.exists("a/b/c")
    assert store.list() == ["a/d"]
    with pytest.raises(ObjectNotFoundError):
        store.stat("a/b/c")
    store.delete("a/b/c")  # deleting a missing key is not an error
    store.put_bytes("a/b/c", b"3")  # and the key can be written again
    assert store.get_bytes("a/b/c") == b"3"


def test_missing_key_is_not_found_naming_the_uri(store: ObjectStore, tmp_path: Path) -> None:
    uri = re.escape(store.url_for("no/such/key.bin"))
    with pytest.raises(ObjectNotFoundError, match=uri):
        store.get_bytes("no/such/key.bin")
    with pytest.raises(ObjectNotFoundError, match=uri):
        store.stat("no/such/key.bin")
    with pytest.raises(ObjectNotFoundError, match=uri):
        store.get_file("no/such/key.bin", tmp_path / "dest.bin")
    assert not (tmp_path / "dest.bin").exists()
    assert not store.exists("no/such/key.bin")


BAD_KEYS = ["", "/abs/key", "a/../b", "..", "a//b", "a/", "./a", ".meta/x", ".tmp/x", "a\\b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_rejected(store: ObjectStore, key: str) -> None:
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_stream(key, [b"x"]),
        lambda: store.get_bytes(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKeyError, match=re.escape(repr(key))):
            call()
    assert issubclass(InvalidKeyError, ValueError)
    assert store.list() == []


@pytest.mark.parametrize("prefix", ["/abs", "../up", "a/../b", ".meta/"])
def test_invalid_prefixes_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.list(prefix)


# -- checksums ------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["edited", "truncated"])
def test_tampered_object_is_detected(store: ObjectStore, tmp_path: Path, change: str) -> None:
    data = b'{"threshold": 0.42, "features": ["amount", "hour"]}' * 100
    info = store.put_bytes("models/fraud/1/threshold.json", data)
    bad = data.replace(b"0.42", b"0.99") if change == "edited" else data[: len(data) // 2]
    tamper(store, "models/fraud/1/threshold.json", bad)
    uri = re.escape(info.uri)
    with pytest.raises(ChecksumMismatchError, match=uri) as excinfo:
        store.get_bytes("models/fraud/1/threshold.json")
    message = str(excinfo.value)
    assert info.sha256 in message and sha(bad) in message
    assert "tampered" in message and "partially" in message
    assert (excinfo.value.expected, excinfo.value.actual) == (info.sha256, sha(bad))
    dest = tmp_path / "downloads" / "threshold.json"
    dest.parent.mkdir()
    dest.write_bytes(b"previous download")
    with pytest.raises(ChecksumMismatchError, match=uri):
        store.get_file("models/fraud/1/threshold.json", dest)
    assert dest.read_bytes() == b"previous download", "destination untouched on mismatch"
    assert [p.name for p in dest.parent.iterdir()] == ["threshold.json"], "no temp file left"
    with pytest.raises(ChecksumMismatchError):
        store.get_json("models/fraud/1/threshold.json")
    assert store.get_bytes("models/fraud/1/threshold.json", verify=False) == bad


def test_expected_sha256_mismatch(store: ObjectStore) -> None:
    info = store.put_bytes("k.bin", b"payload")
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError, match=re.escape(info.uri)) as excinfo:
        store.get_bytes("k.bin", expected_sha256=wrong)
    assert wrong in str(excinfo.value) and info.sha256 in str(excinfo.value)
    # expected_sha256 is checked even when verification against the stored value is off
    with pytest.raises(ChecksumMismatchError):
        store.get_bytes("k.bin", expected_sha256=wrong, verify=False)
    assert store.get_bytes("k.bin", expected_sha256=info.sha256.upper()) == b"payload"


def test_stored_sha256_is_the_content_hash(store: ObjectStore) -> None:
    for i, data in enumerate([b"", b"a", os.urandom(70_000)]):
        info = store.put_bytes(f"h/{i}", data)
        assert info.sha256 == hashlib.sha256(data).hexdigest() == store.stat(f"h/{i}").sha256


# -- atomicity ------------------------------------------------------------------------------


def test_failed_stream_leaves_no_visible_object(store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="upstream connection lost"):
        store.put_stream("logs/partial.jsonl", failing_stream(3))
    assert not store.exists("logs/partial.jsonl")
    assert store.list() == []
    if isinstance(store, LocalStore):
        assert list((store.root / ".tmp").iterdir()) == [], "temp file cleaned up"


def test_failed_overwrite_keeps_old_content(store: ObjectStore) -> None:
    old = store.put_bytes("models/fraud/1/model.ubj", b"old model")
    with pytest.raises(RuntimeError):
        store.put_stream("models/fraud/1/model.ubj", failing_stream(2))
    assert store.get_bytes("models/fraud/1/model.ubj") == b"old model"
    assert store.stat("models/fraud/1/model.ubj") == old
    assert store.list() == ["models/fraud/1/model.ubj"]


def test_readers_never_see_partial_objects(store: ObjectStore) -> None:
    size = 256 * 1024
    versions = [bytes([65 + i]) * size for i in range(4)]
    store.put_bytes("hot", versions[0])
    done = threading.Event()
    seen: set[bytes] = set()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                data = store.get_bytes("hot", verify=False)
                assert data in versions, f"partial or mixed object of {len(data)} bytes"
                seen.add(data[:1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(20):
            store.put_bytes("hot", versions[i % 4])
    finally:
        done.set()
        reader.join()
    assert not errors, errors
    assert seen


# -- local backend specifics ----------------------------------------------------------------


def test_local_bookkeeping_is_hidden(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a/b", b"1")
    (store.root / ".tmp" / "put-crashed.part").write_bytes(b"left by a crash")
    assert (store.root / ".meta" / "sha256" / "a" / "b").read_text().strip() == sha(b"1")
    assert store.list() == ["a/b"]
    assert store.list(recursive=False) == ["a/"]
    assert store.uri == (tmp_path / "s").as_uri()
    assert store.url_for("a/b") == (tmp_path / "s" / "a" / "b").as_uri()


def test_local_root_is_created_lazily(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lazy" / "store")
    assert store.list() == [] and not store.exists("x")
    assert not (tmp_path / "lazy").exists()
    store.put_bytes("x", b"1")
    assert (tmp_path / "lazy" / "store" / "x").read_bytes() == b"1"


def test_local_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/b/c", b"1")
    store.delete("a/b/c")
    assert not (tmp_path / "a").exists() and not (tmp_path / ".meta" / "sha256" / "a").exists()
    store.put_bytes("a", b"now a file")  # possible again once 'a/' is gone
    assert store.get_bytes("a") == b"now a file"


def test_local_errors_name_the_uri(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a", b"object")
    with pytest.raises(StoreError, match=re.escape(store.url_for("a/b"))) as excinfo:
        store.put_bytes("a/b", b"nested under an object")
    assert "rename" in str(excinfo.value)
    assert list((store.root / ".tmp").iterdir()) == []
    (tmp_path / "file").write_text("not a dir")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        on_file = LocalStore(root)
        with pytest.raises(StoreError, match=re.escape(on_file.url_for("k"))) as excinfo:
            on_file.put_bytes("k", b"x")
        assert "is a file" in str(excinfo.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_local_permission_denied(tmp_path: Path) -> None:  # pragma: no cover - non-root only
    store = LocalStore(tmp_path / "s")
    store.put_bytes("k", b"x")
    os.chmod(store.root, 0o500)
    try:
        with pytest.raises(StorePermissionError, match=re.escape(store.url_for("k2"))):
            store.put_bytes("k2", b"y")
    finally:
        os.chmod(store.root, 0o700)


def test_local_object_without_sidecar_reads_unverified(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "copied-in.csv").write_bytes(b"a,b\n")
    assert store.stat("copied-in.csv").sha256 == ""
    assert store.get_bytes("copied-in.csv") == b"a,b\n"
    with pytest.raises(ChecksumMismatchError):
        store.get_bytes("copied-in.csv", expected_sha256=sha(b"other"))


# -- S3 backend specifics: real server responses and injected faults -------------------------


class Faults:
    """Replace the minio client's urllib3 ``urlopen``; inject faults, pass the rest through."""

    def __init__(
        self,
        store: S3Store,
        faults: list[Callable[[], Any]],
        when: Callable[[str, str], bool] = lambda method, url: True,
    ) -> None:
        self.calls: list[tuple[str, str]] = []
        self._faults = list(faults)
        self._when = when
        self._real = store.client._http.urlopen

    def __call__(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, url))
        if self._faults and self._when(method, url):
            return self._faults.pop(0)()
        return self._real(method, url, *args, **kwargs)


def inject(monkeypatch: pytest.MonkeyPatch, store: S3Store, *faults: Callable[[], Any], **kw: Any):
    spy = Faults(store, list(faults), **kw)
    monkeypatch.setattr(store.client._http, "urlopen", spy)
    return spy


def s3_error(status: int, code: str) -> Callable[[], urllib3.HTTPResponse]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>injected {code}</Message></Error>"
    ).encode()
    return lambda: urllib3.HTTPResponse(
        body=io.BytesIO(body),
        status=status,
        headers={"Content-Type": "application/xml"},
        preload_content=False,
    )


def plain_error(status: int) -> Callable[[], urllib3.HTTPResponse]:
    return lambda: urllib3.HTTPResponse(
        body=io.BytesIO(b"<html>bad gateway</html>"),
        status=status,
        headers={"Content-Type": "text/html"},
        preload_content=False,
    )


def raises(exc: BaseException) -> Callable[[], Any]:
    def fault() -> Any:
        raise exc

    return fault


TRANSIENT_FAULTS = {
    "connection-reset": raises(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104))
    ),
    "connection-refused": raises(
        urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")
    ),
    "read-timeout": raises(urllib3.exceptions.ReadTimeoutError(None, None, "Read timed out.")),
    "503-SlowDown": s3_error(503, "SlowDown"),
    "500-InternalError": s3_error(500, "InternalError"),
    "503-ServiceUnavailable": s3_error(503, "ServiceUnavailable"),
    "400-RequestTimeout": s3_error(400, "RequestTimeout"),
    "502-html": plain_error(502),
    "504-html": plain_error(504),
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_transient_errors_are_retried(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    spy = inject(monkeypatch, s3_store, TRANSIENT_FAULTS[fault], s3_error(503, "SlowDown"))
    info = s3_store.put_bytes("retried.bin", b"made it")
    assert [method for method, _ in spy.calls] == ["PUT", "PUT", "PUT"]
    assert spy.calls[-1][1].endswith("/root/pfx/retried.bin")
    monkeypatch.undo()
    assert s3_store.get_bytes("retried.bin", expected_sha256=info.sha256) == b"made it"


def test_reads_are_retried(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_store.put_bytes("r/k", b"data")
    flaky = TRANSIENT_FAULTS["read-timeout"]
    for call in (
        lambda: s3_store.get_bytes("r/k"),
        lambda: s3_store.get_file("r/k", tmp_path / "k"),
        lambda: s3_store.stat("r/k"),
        lambda: s3_store.list("r/"),
        lambda: s3_store.delete("r/missing"),
    ):
        spy = inject(monkeypatch, s3_store, flaky, s3_error(503, "SlowDown"))
        call()
        assert len(spy.calls) == 3, spy.calls
        monkeypatch.undo()
    assert (tmp_path / "k").read_bytes() == b"data"


def test_retries_give_up_with_unavailable_error(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = inject(monkeypatch, s3_store, *[s3_error(503, "SlowDown")] * 10)
    with pytest.raises(StoreUnavailableError, match=re.escape(s3_store.url_for("k"))) as excinfo:
        s3_store.put_bytes("k", b"x")
    assert "SlowDown" in str(excinfo.value) and "3 attempt" in str(excinfo.value)
    assert len(spy.calls) == FAST_RETRY.attempts


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("AccessDenied", "AWS_ACCESS_KEY_ID"),
        ("InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"),
        ("SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_permission_errors_are_not_retried(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, code: str, hint: str
) -> None:
    spy = inject(monkeypatch, s3_store, s3_error(403, code))
    with pytest.raises(StorePermissionError, match=re.escape(s3_store.url_for("k"))) as excinfo:
        s3_store.get_bytes("k")
    assert code in str(excinfo.value) and hint in str(excinfo.value)
    assert len(spy.calls) == 1


def test_missing_bucket_is_not_retried(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"fraudops-missing-{uuid.uuid4().hex[:8]}"
    missing = S3Store(bucket, "p", client=s3_store.client, create_bucket=False, retry=FAST_RETRY)
    spy = inject(monkeypatch, missing)
    with pytest.raises(StoreError, match=re.escape(f"s3://{bucket}/p/k")) as excinfo:
        missing.put_bytes("k", b"x")
    assert not isinstance(excinfo.value, ObjectNotFoundError)
    assert "NoSuchBucket" in str(excinfo.value) and "create_bucket" in str(excinfo.value)
    assert len(spy.calls) == 1
    with pytest.raises(ObjectNotFoundError, match="NoSuchBucket"):
        missing.get_bytes("k")
    assert not missing.exists("k")
    assert missing.list() == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_gives_up_after_retries() -> None:
    env = {"S3_ENDPOINT": f"http://127.0.0.1:{_free_port()}", **CREDS, "AWS_REGION": "us-east-1"}
    store = open_store("s3://bucket/p", env=env, retry=FAST_RETRY)
    with pytest.raises(StoreUnavailableError, match=re.escape("s3://bucket/p/k")) as excinfo:
        store.get_bytes("k")
    assert "cannot reach" in str(excinfo.value) and "S3_ENDPOINT" in str(excinfo.value)


def test_tls_to_a_plain_http_server_is_not_retried(moto_endpoint: str) -> None:
    env = {"S3_ENDPOINT": moto_endpoint.removeprefix("http://"), **CREDS, "AWS_REGION": "x"}
    store = open_store("s3://bucket/p", env=env, retry=FAST_RETRY)  # S3_USE_HTTPS defaults to 1
    with pytest.raises(StoreError, match="S3_USE_HTTPS=0") as excinfo:
        store.get_bytes("k")
    assert not isinstance(excinfo.value, StoreUnavailableError)
    assert "s3://bucket/p/k" in str(excinfo.value)


def _small_parts(store: S3Store) -> S3Store:
    from minio.helpers import MIN_PART_SIZE

    return S3Store(
        store.bucket, store.prefix, client=store.client, retry=FAST_RETRY, part_size=MIN_PART_SIZE
    )


def test_failed_multipart_upload_is_aborted_and_invisible(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _small_parts(s3_store)
    store.put_bytes("big.bin", b"old content")
    data = os.urandom(11 * MIB)  # three parts of <= 5 MiB
    spy = inject(
        monkeypatch, store, s3_error(403, "AccessDenied"), when=lambda m, u: "partNumber=2" in u
    )
    with pytest.raises(StorePermissionError):
        store.put_stream("big.bin", io.BytesIO(data))
    methods = [
        (m, re.sub(r"uploadId=[^&]+", "uploadId=*", u.split("?", 1)[-1])) for m, u in spy.calls
    ]
    assert ("POST", "uploads=") in methods, "a multipart upload was started"
    assert ("DELETE", "uploadId=*") in methods, "and aborted after the failure"
    monkeypatch.undo()
    assert store.get_bytes("big.bin") == b"old content"
    assert store.list() == ["big.bin", "warm-up"]


def test_multipart_upload_retried_after_transient_part_failure(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _small_parts(s3_store)
    data = os.urandom(11 * MIB)
    spy = inject(
        monkeypatch, store, s3_error(503, "SlowDown"), when=lambda m, u: "partNumber=2" in u
    )
    info = store.put_stream("big.bin", iter([data[:MIB], data[MIB:]]))
    assert sum(1 for m, u in spy.calls if m == "POST" and "uploads" in u) == 2
    monkeypatch.undo()
    assert store.get_bytes("big.bin") == data
    assert store.stat("big.bin").sha256 == info.sha256 == sha(data)


def test_s3_checksum_travels_as_object_metadata(s3_store: S3Store) -> None:
    info = s3_store.put_bytes("m.bin", b"abc")
    raw = s3_store.client.stat_object(s3_store.bucket, "root/pfx/m.bin")
    assert raw.metadata["x-amz-meta-sha256"] == info.sha256 == sha(b"abc")


def test_s3_object_with_wrong_metadata_is_detected(s3_store: S3Store) -> None:
    s3_store.client.put_object(
        s3_store.bucket, "root/pfx/w.bin", io.BytesIO(b"abc"), 3, metadata={"sha256": "0" * 64}
    )
    with pytest.raises(ChecksumMismatchError, match=re.escape(s3_store.url_for("w.bin"))):
        s3_store.get_bytes("w.bin")


def test_s3_object_written_by_other_tools_has_no_checksum(s3_store: S3Store) -> None:
    s3_store.client.put_object(s3_store.bucket, "root/pfx/ext.csv", io.BytesIO(b"a,b\n"), 4)
    assert s3_store.stat("ext.csv").sha256 == ""
    assert s3_store.get_bytes("ext.csv") == b"a,b\n"
    with pytest.raises(ChecksumMismatchError):
        s3_store.get_bytes("ext.csv", expected_sha256=sha(b"other"))


def test_s3_list_stays_inside_the_root_prefix(s3_store: S3Store) -> None:
    s3_store.client.put_object(s3_store.bucket, "root/pfxother", io.BytesIO(b"x"), 1)
    s3_store.client.put_object(s3_store.bucket, "elsewhere/k", io.BytesIO(b"x"), 1)
    s3_store.client.put_object(s3_store.bucket, "root/pfx/dir-marker/", io.BytesIO(b""), 0)
    assert s3_store.list() == ["warm-up"]
    assert s3_store.url_for("a/b") == f"s3://{s3_store.bucket}/root/pfx/a/b"


# -- configuration and open_store -----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "S3_ENDPOINT"),
        ({"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}, "S3_ENDPOINT"),
        ({"S3_ENDPOINT": "minio:9000"}, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ({"S3_ENDPOINT": "minio:9000", "AWS_ACCESS_KEY_ID": "ak"}, "AWS_SECRET_ACCESS_KEY"),
        ({"S3_ENDPOINT": "minio:9000", "AWS_SECRET_ACCESS_KEY": "sk"}, "AWS_ACCESS_KEY_ID"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "maybe", **CREDS}, "S3_USE_HTTPS"),
        ({"S3_ENDPOINT": "minio:9000", "S3_VERIFY_SSL": "2", **CREDS}, "S3_VERIFY_SSL"),
        ({"S3_ENDPOINT": "https://minio:9000", "S3_USE_HTTPS": "0", **CREDS}, "S3_USE_HTTPS"),
        ({"S3_ENDPOINT": "http://minio:9000/bucket", **CREDS}, "must not contain a path"),
        ({"S3_ENDPOINT": "ftp://minio:9000", **CREDS}, "S3_ENDPOINT"),
    ],
)
def test_s3_config_errors_name_the_variable(env: dict[str, str], missing: str) -> None:
    with pytest.raises(StoreConfigError, match=re.escape(missing)) as excinfo:
        open_store("s3://bucket/prefix", env=env)
    assert "s3://bucket/prefix" in str(excinfo.value)


@pytest.mark.parametrize(
    ("env", "endpoint", "secure"),
    [
        ({"S3_ENDPOINT": "minio-service.kubeflow:9000"}, "minio-service.kubeflow:9000", True),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "minio:9000", False),
        ({"S3_ENDPOINT": "http://127.0.0.1:9000"}, "127.0.0.1:9000", False),
        ({"S3_ENDPOINT": "http://127.0.0.1:9000/", "S3_USE_HTTPS": "0"}, "127.0.0.1:9000", False),
        ({"S3_ENDPOINT": "https://s3.example.com"}, "s3.example.com", True),
        ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "minio:9000", False),
    ],
)
def test_s3_config_from_env(env: dict[str, str], endpoint: str, secure: bool) -> None:
    config = S3Config.from_env({**env, **CREDS})
    assert (config.endpoint, config.secure, config.verify_ssl) == (endpoint, secure, True)
    assert config.region is None


def test_s3_config_options_and_secret_hiding() -> None:
    env = {
        "S3_ENDPOINT": "minio:9000",
        "S3_VERIFY_SSL": "0",
        "AWS_DEFAULT_REGION": "eu-west-1",
        **CREDS,
    }
    config = S3Config.from_env(env)
    assert config.verify_ssl is False and config.region == "eu-west-1"
    assert config.access_key == "ak" and "sk" not in repr(config)
    assert S3Config.from_env({**env, "AWS_REGION": "us-west-2"}).region == "us-west-2"


def test_open_store_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = open_store()
    assert isinstance(default, LocalStore) and default.root == tmp_path / DEFAULT_STORE_DIR
    assert open_store("").uri == default.uri
    assert not (tmp_path / ".fraudops").exists(), "nothing created before the first write"
    by_uri = open_store((tmp_path / "a b").as_uri())
    assert isinstance(by_uri, LocalStore) and by_uri.root == tmp_path / "a b"
    assert open_store(f"file://localhost{tmp_path}/x").uri == (tmp_path / "x").as_uri()
    relative = open_store("rel/store")
    assert isinstance(relative, LocalStore) and relative.root == tmp_path / "rel" / "store"
    assert open_store(tmp_path / "p").uri == (tmp_path / "p").as_uri()
    s3 = open_store("s3://my-bucket/models/prod/", env={"S3_ENDPOINT": "127.0.0.1:1", **CREDS})
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.uri) == (
        "my-bucket",
        "models/prod",
        "s3://my-bucket/models/prod",
    )
    bare = open_store("s3://my-bucket", env={"S3_ENDPOINT": "127.0.0.1:1", **CREDS})
    assert bare.url_for("k") == "s3://my-bucket/k"
    assert parse_s3_uri("s3://b/x/y") == ("b", "x/y")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket/x", "'gs' is not supported"),
        ("s3://", "expected s3://bucket"),
        ("s3:///prefix", "expected s3://bucket"),
        ("s3://bucket/../x", "'..'"),
        ("file://relative/dir", "must be absolute"),
        ("s3://Not_A_Valid_Bucket!", "invalid bucket name"),
    ],
)
def test_open_store_rejects_bad_uris(uri: str, message: str) -> None:
    env = {"S3_ENDPOINT": "127.0.0.1:1", **CREDS}
    with pytest.raises(StoreConfigError, match=re.escape(message)):
        open_store(uri, env=env)


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "import components.store, components.store.s3, components.store.uri\n"
        "import components.store.local, components.store.base\n"
        "assert os.listdir('.') == [], os.listdir('.')\n"
        "assert not any(type(o).__name__ == 'Minio' for o in __import__('gc').get_objects())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_object_info_is_frozen() -> None:
    info = ObjectInfo(key="k", size=1, sha256="x", uri="file:///k")
    with pytest.raises(AttributeError):
        info.size = 2  # type: ignore[misc]
    assert json.loads(json.dumps(dataclasses.asdict(info)))["key"] == "k"
