"""Options shared by several commands, and how their defaults are found."""

from __future__ import annotations

from typing import Annotated

import typer

from components.frames import default_store_uri

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Object store: a folder, file://..., s3://bucket or s3://bucket/prefix (MinIO: set "
        "S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Default: $FRAUDOPS_STORE or "
        "$FRAUDOPS_HOME/store.",
    ),
]
ModelNameOpt = Annotated[str, typer.Option("--model-name", help="Registry name of the model.")]
DEFAULT_MODEL_NAME = "fraud-detector"


def store_uri(option: str | None) -> str:
    """The store URI from the option, ``$FRAUDOPS_STORE``, or the embedded default."""
    return default_store_uri(option)
