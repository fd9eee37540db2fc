"""Where the model server gets its bundle: a local folder, or a model in a store.

``--model_uri`` takes either

- a **bundle folder** already on disk, e.g. ``/mnt/models`` where KServe's storage initializer
  downloaded ``storageUri: s3://fraudops/models/fraud-detector/v3`` (also ``file:///mnt/models``);
  every file is checked against ``MANIFEST.json`` before anything is deserialised; or
- a **model in a store**: ``<store uri>#<name>[:<version|alias>]``, the fragment naming the model
  (default alias ``champion``), e.g. ``s3://fraudops#fraud-detector:champion``,
  ``file:///var/fraudops/store#fraud-detector:v3``, ``.fraudops/store#fraud-detector``. The
  bundle is downloaded with its sha256 checked per file; S3/MinIO settings come from KServe's
  variables (``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ...); or
- a **bundle's prefix in a store**, as the registry writes it:
  ``s3://fraudops/models/fraud-detector/v3`` is ``s3://fraudops#fraud-detector:v3`` (the same
  download and checks; a local path is read as a folder instead).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from components.bundle import MANIFEST, NAME_PATTERN, VERSION_PATTERN, Bundle, fetch_bundle
from components.store import ObjectStore, open_store

__all__ = ["BundleSource", "parse_model_uri"]


@dataclass(frozen=True)
class BundleSource:
    """A parsed ``--model_uri``.

    Attributes:
        uri: As given.
        folder: The bundle folder (local form), or None for a store.
        store_uri: The store (store form; "" is the embedded default store), or None.
        name: Model name (store form; for a folder, read from its manifest when asked).
        ref: Version or alias (store form).
    """

    uri: str
    folder: Path | None = None
    store_uri: str | None = None
    name: str | None = None
    ref: str = "champion"

    def model_name(self) -> str:
        """The registry name of the model, without loading it."""
        if self.name:
            return self.name
        assert self.folder is not None
        try:
            return json.loads((self.folder / MANIFEST).read_text())["name"]
        except (OSError, ValueError, KeyError):
            return "fraud-detector"

    def store(self) -> ObjectStore | None:
        """The store of a store-form source (not contacted yet)."""
        return open_store(self.store_uri or None) if self.store_uri is not None else None

    def open(self, workdir: Path | None) -> Bundle:
        """A verified bundle: opened in place, or downloaded into ``workdir``.

        Raises:
            BundleError: no such model, version or alias.
            BundleIntegrityError: a file does not match the manifest.
            StoreError: the store cannot be reached or read.
        """
        if self.folder is not None:
            return Bundle.open(self.folder)
        store = self.store()
        assert store is not None and self.name is not None and workdir is not None
        return fetch_bundle(store, self.name, self.ref, workdir)


_BUNDLE_KEY = re.compile(rf"([a-z0-9]+://[^#]+?)/models/({NAME_PATTERN})/({VERSION_PATTERN})/?")
"""A bundle's prefix in a store, as the registry writes it: ``<store>/models/<name>/<vN>``."""


def parse_model_uri(uri: str) -> BundleSource:
    """Parse ``--model_uri`` (see the module docstring).

    Raises:
        ValueError: neither a folder nor ``<store>#<name>[:<ref>]``.
    """
    text = uri.strip()
    if not text:
        raise ValueError("--model_uri is empty")
    base, sep, fragment = text.partition("#")
    if sep:
        name, _, ref = fragment.partition(":")
        if not name:
            raise ValueError(
                f"--model_uri {uri!r}: the fragment must name the model, "
                "e.g. s3://fraudops#fraud-detector:champion"
            )
        return BundleSource(text, store_uri=base, name=name, ref=ref or "champion")
    path = Path(unquote(urlsplit(text).path)) if text.startswith("file://") else Path(text)
    in_store = _BUNDLE_KEY.fullmatch(text)
    if in_store and not text.startswith("file://"):  # a bundle's own prefix in a store
        store_uri, name, version = in_store.groups()
        return BundleSource(text, store_uri=store_uri, name=name, ref=version)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(
            f"--model_uri {uri!r}: a store needs the model in the fragment "
            f"({text}#<name>[:<version|alias>]); a bundle folder must be a local path"
        )
    if not path.is_dir():
        raise ValueError(
            f"--model_uri {uri!r}: no such folder. Give a bundle folder (e.g. /mnt/models) or "
            "a model in a store: <store uri>#<name>[:<version|alias>]"
        )
    return BundleSource(text, folder=path)
