"""Model bundles and the registry: immutable, versioned, checksummed folders in the store.

Layout: ``models/<name>/<version>/`` holds the model (XGBoost JSON or skops), the feature spec,
the threshold, metrics, plots, the model card, the drift reference, the online-feature snapshot
and ``MANIFEST.json`` (sha256 and size of every file, and provenance). The manifest is written
last: a bundle without one is invisible, so a crash never leaves a half bundle that anyone
loads. Aliases (``champion``, ``canary``) are small pointer objects under
``models/<name>/aliases/``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from components.audit import record_event
from components.features import FeatureSpec
from components.frames import frame_sha256
from components.model import FraudModel
from components.store import ChecksumMismatchError, ObjectNotFoundError, ObjectStore, StoreError

__all__ = [
    "ALIASES",
    "MANIFEST",
    "NAME_PATTERN",
    "VERSION_PATTERN",
    "Bundle",
    "BundleError",
    "BundleIntegrityError",
    "fetch_bundle",
    "frame_sha256",
    "list_versions",
    "register_bundle",
    "remove_alias",
    "resolve",
    "set_alias",
    "verify_folder",
]

MANIFEST = "MANIFEST.json"
ALIASES = ("champion", "canary")
NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
"""A registered model's name (a Kubernetes name)."""
VERSION_PATTERN = r"v\d+"
"""A registered version: ``v1``, ``v2``, ..."""
_VERSION = re.compile(VERSION_PATTERN)


class BundleError(StoreError):
    """A bundle or alias does not exist or cannot be written."""


class BundleIntegrityError(BundleError):
    """A bundle's files do not match its manifest: tampered, truncated or incomplete."""


def _code_version() -> str:
    try:
        return metadata.version("fraudops")
    except metadata.PackageNotFoundError:
        return "unknown"


def _prefix(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise BundleError(
            f"model name {name!r}: use lower-case letters, digits and '-' (a Kubernetes name)"
        )
    return f"models/{name}"


def list_versions(store: ObjectStore, name: str) -> list[str]:
    """Complete versions of a model (those with a manifest), oldest first."""
    found = []
    for key in store.list(f"{_prefix(name)}/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == MANIFEST and _VERSION.fullmatch(parts[2]):
            found.append(parts[2])
    return sorted(found, key=lambda v: int(v[1:]))


def resolve(store: ObjectStore, name: str, ref: str) -> str:
    """Turn ``v3``, ``latest``, or an alias (``champion``) into a version.

    Raises:
        BundleError: no such version or alias.
    """
    versions = list_versions(store, name)
    if ref == "latest":
        if not versions:
            raise BundleError(f"model {name!r} has no registered version in {store.uri}")
        return versions[-1]
    if _VERSION.fullmatch(ref):
        if ref not in versions:
            raise BundleError(
                f"model {name!r} has no version {ref} in {store.uri} "
                f"(versions: {', '.join(versions) or 'none'})"
            )
        return ref
    try:
        pointer = store.get_json(f"{_prefix(name)}/aliases/{ref}.json")
    except ObjectNotFoundError as e:
        raise BundleError(
            f"model {name!r} has no alias {ref!r} in {store.uri}; set one with "
            f"`fraudops model alias {name} {ref} <version>` or use a version (v1, latest)"
        ) from e
    return pointer["version"]


def set_alias(
    store: ObjectStore,
    name: str,
    alias: str,
    version: str,
    reason: str = "",
    actor: str | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` (which must exist) and record it in the audit log."""
    resolve(store, name, version)
    key = f"{_prefix(name)}/aliases/{alias}.json"
    previous = store.get_json(key)["version"] if store.exists(key) else None
    manifest_sha = store.stat(f"{_prefix(name)}/{version}/{MANIFEST}").sha256
    pointer = {
        "version": version,
        "manifest_sha256": manifest_sha,
        "updated_at": datetime.now(UTC).isoformat(),
        "previous": previous,
    }
    store.put_json(key, pointer)
    record_event(
        store,
        "alias",
        {"model": name, "alias": alias, "version": version, "reason": reason},
        {"previous": previous},
        actor,
    )
    return pointer


def remove_alias(
    store: ObjectStore, name: str, alias: str, reason: str = "", actor: str | None = None
) -> str | None:
    """Delete ``alias`` (nothing to do when it is not set); return the version it named."""
    key = f"{_prefix(name)}/aliases/{alias}.json"
    if not store.exists(key):
        return None
    previous = store.get_json(key)["version"]
    store.delete(key)
    record_event(
        store,
        "alias_removed",
        {"model": name, "alias": alias, "reason": reason},
        {"previous": previous},
        actor,
    )
    return previous


def register_bundle(
    store: ObjectStore,
    name: str,
    folder: Path,
    provenance: dict[str, Any],
    actor: str | None = None,
) -> str:
    """Upload a bundle folder as the next version of ``name``; the manifest goes last.

    Args:
        store: The object store.
        name: Model name (a Kubernetes-style name).
        folder: Local folder with the bundle's files.
        provenance: Training data hash, training window, parent version, metrics summary...
            recorded in the manifest.
        actor: Who registers (for the audit log).

    Returns:
        The new version (``v1``, ``v2``, ...).
    """
    prefix = _prefix(name)
    versions = list_versions(store, name)
    version = f"v{int(versions[-1][1:]) + 1 if versions else 1}"
    if store.exists(f"{prefix}/{version}/{MANIFEST}"):  # a concurrent registration won
        raise BundleError(f"{store.url_for(f'{prefix}/{version}')} already exists; retry")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        info = store.put_file(f"{prefix}/{version}/{rel}", path)
        files[rel] = {"sha256": info.sha256, "size": info.size}
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "code_version": _code_version(),
        "files": files,
        **provenance,
    }
    store.put_json(f"{prefix}/{version}/{MANIFEST}", manifest)
    record_event(
        store,
        "register",
        {"model": name, **{k: v for k, v in provenance.items() if k != "files"}},
        {"version": version, "uri": store.url_for(f"{prefix}/{version}")},
        actor,
    )
    return version


def verify_folder(folder: Path) -> dict[str, Any]:
    """Check every file of a local bundle folder against its manifest.

    Raises:
        BundleIntegrityError: a file is missing, has another size or another sha256.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise BundleIntegrityError(f"{folder}: no readable {MANIFEST} ({e}); not a bundle") from e
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise BundleIntegrityError(f"{folder}: {rel} is listed in the manifest but missing")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected["sha256"]:
            raise BundleIntegrityError(
                f"{folder}: {rel} has sha256 {digest.hexdigest()[:12]}..., the manifest says "
                f"{expected['sha256'][:12]}...; the bundle was modified or partially copied. "
                "Refusing to load it: fetch it again or register a new version."
            )
    return manifest


@dataclass
class Bundle:
    """A verified bundle on local disk."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_json((self.folder / "feature_spec.json").read_text())

    def threshold(self) -> dict[str, Any]:
        return json.loads((self.folder / "threshold.json").read_text())

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.folder / "metrics.json").read_text())

    def model(self) -> FraudModel:
        return FraudModel.load(self.folder / "model")

    @classmethod
    def open(cls, folder: str | Path) -> Bundle:
        """Verify a local bundle folder (e.g. fetched by KServe's storage initializer)."""
        folder = Path(folder)
        return cls(folder, verify_folder(folder))


def fetch_bundle(store: ObjectStore, name: str, ref: str, dest: Path) -> Bundle:
    """Download a bundle (version, ``latest`` or alias), verifying every file's sha256.

    Raises:
        BundleError: no such version or alias.
        BundleIntegrityError: a file does not match the manifest.
    """
    version = resolve(store, name, ref)
    prefix = f"{_prefix(name)}/{version}"
    manifest_bytes = store.get_bytes(f"{prefix}/{MANIFEST}")
    manifest = json.loads(manifest_bytes)
    target = dest / name / version
    target.mkdir(parents=True, exist_ok=True)
    for rel, expected in manifest["files"].items():
        try:
            store.get_file(f"{prefix}/{rel}", target / rel, expected_sha256=expected["sha256"])
        except ObjectNotFoundError as e:
            raise BundleIntegrityError(
                f"{store.url_for(prefix)}: {rel} is in the manifest but missing from the store"
            ) from e
        except ChecksumMismatchError as e:
            raise BundleIntegrityError(
                f"{store.url_for(prefix)}: {rel} does not match the manifest ({e}). Refusing "
                "to load a tampered or damaged bundle."
            ) from e
    (target / MANIFEST).write_bytes(manifest_bytes)
    return Bundle(target, verify_folder(target))
