"""The scoring routes without FastAPI's per-request cost: the same model call, the same answers.

KServe serves ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>/infer`` through
FastAPI routes. On the V2 route that costs more than scoring does: FastAPI parses the body with
the standard library's ``json``, validates the Python objects with pydantic and encodes the
response through ``jsonable_encoder``. On this machine an empty KServe model spends 2.2-3.0
times the server time on a V2 request that it spends on a V1 one (``benchmarks/RESULTS.md``).

:class:`serving.http.ScoringMiddleware` hands plain-JSON scoring requests for a model it serves
to :func:`serve`. It does what KServe's route handlers do, in the same order, with KServe's own
types and exception handlers, minus FastAPI's routing, dependency solving and re-encoding:

- readiness: a model that is not ready answers 503 (``ModelNotReady``), as KServe's routes do;
- V1: ``orjson`` parses the body, as KServe's ``DataPlane.decode`` does (a body it refuses
  only for ``NaN``, ``Infinity`` or an out-of-range number is read with ``json``, so that the
  400 names the field); the model's dict is encoded with ``orjson``, as KServe's
  ``ORJSONResponse`` would;
- V2: a body of the plain shape is read with ``orjson`` straight into KServe's
  ``InferRequest`` (:func:`parse_v2`); any other goes through pydantic's validation against
  KServe's ``InferenceRequest`` (the model FastAPI validates against) and
  ``InferRequest.from_inference_request``, as ``DataPlane.decode`` does; the response is the
  JSON the route writes (KServe's ``InferResponse.to_rest`` validated as
  ``InferenceResponse``), written straight from the numpy outputs for the responses fraudops'
  model builds (:func:`_rest_json`);
- ``Model.__call__`` runs preprocess, predict and postprocess as under KServe's ``DataPlane``;
- an exception goes to the app's exception handler for its class (KServe's and fraudops'),
  so errors keep their status and ``{"error": ...}`` body. Other exceptions propagate to the
  middleware, as they would from the route.

Everything else stays on KServe's routes: CloudEvents (structured or binary), the V2 binary
tensor extension, versioned V2 paths and models fraudops does not serve. The server option
``--direct_routes false`` sends every request there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import is_structured_cloudevent
from pydantic import ValidationError
from starlette.requests import Request

__all__ = ["encode_response", "parse_v2", "serve", "takes"]

_JSON = [(b"content-type", b"application/json")]
_datatype = lru_cache(maxsize=64)(from_np_dtype)  # a chain of dtype comparisons: 6 us for FP64


def takes(scope: dict) -> bool:
    """Whether a scoring request is plain JSON (no CloudEvent, no binary tensors, no version).

    Args:
        scope: The ASGI scope, after :class:`serving.http.ScoringMiddleware` normalised the
            content type (a missing or parametrised ``application/json`` reads
            ``application/json``).
    """
    if "/versions/" in scope["path"]:
        return False
    for key, value in scope["headers"]:
        if key == b"content-type":
            if value != b"application/json":
                return False
        elif key == b"inference-header-content-length" or key.startswith(b"ce-"):
            return False
    return True


async def serve(
    model: Any,
    protocol: str,
    scope: dict,
    body: bytes,
    send: Callable,
    handlers: dict[Any, Callable],
) -> bool:
    """Answer one scoring request as KServe's route would; ``False``: leave it to KServe.

    Args:
        model: The served ``kserve.Model``.
        protocol: ``v1`` or ``v2``.
        scope: The ASGI scope of a request :func:`takes` accepted.
        body: The whole request body.
        send: The ASGI send callable.
        handlers: The app's exception handlers (``FastAPI.exception_handlers``).

    Returns:
        Whether the request was answered (``False`` only for a structured CloudEvent, which
        KServe's route unwraps).
    """
    try:
        if not model.ready:
            raise ModelNotReady(model.name)
        if protocol == "v1":
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                payload = _nonstandard_numbers(body, e)
            if isinstance(payload, dict) and is_structured_cloudevent(payload):
                return False
        else:
            payload = parse_v2(body, model.name)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        response, response_headers = await model(payload, headers=headers)
        content, extra = encode_response(response)
    except Exception as e:
        handler = _handler(handlers, e)
        if handler is None:
            raise
        answer = await handler(Request(scope), e)
        await answer(scope, _no_body, send)
        return True
    for key, value in response_headers.items():
        if key.lower() not in ("content-length", "content-type"):
            extra.append((key.lower().encode("latin-1"), str(value).encode("latin-1")))
    extra.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": extra})
    await send({"type": "http.response.body", "body": content})
    return True


def _nonstandard_numbers(body: bytes, error: orjson.JSONDecodeError) -> object:
    """A V1 body ``orjson`` refused, if only for ``NaN``, ``Infinity`` or a number beyond the
    float range (Python's ``json`` writes the first two): parsed as Python's ``json`` reads
    them, so that validation names the transaction and the field. Anything else (invalid
    JSON, a lone surrogate no response could echo) keeps KServe's ``Unrecognized request
    format`` error.
    """
    refusal = InvalidInput(f"Unrecognized request format: {error}")
    try:  # UTF-8 only, as orjson: json.loads would also guess UTF-16 or a BOM from bytes
        payload = json.loads(body.decode("utf-8"))
        orjson.dumps(payload)  # what orjson cannot write back is refused as before
    except (ValueError, TypeError, RecursionError):
        raise refusal from None
    return payload


def parse_v2(body: bytes, model_name: str) -> InferRequest:
    """The ``InferRequest`` KServe's V2 route builds from a JSON body, or its error.

    A body of the plain shape (see :func:`_plain_request`) is read with ``orjson`` and turned
    into KServe's ``InferRequest`` directly: half the time of pydantic's validation into
    ``InferenceRequest`` and ``InferRequest.from_inference_request``, with the same result.
    Anything else (parameters, requested outputs, values pydantic would coerce or refuse,
    JSON ``orjson`` refuses or may read differently: integers beyond 64 bits) goes through
    exactly those two steps.

    Raises:
        RequestValidationError: pydantic refused the body, as FastAPI raises it on the route
            (fraudops' handler answers it with a 400).
        InvalidInput: an ``FP16`` tensor with JSON data, as ``from_inference_request`` does.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    request = None
    if type(document) is dict and not _long_digit_run(body):
        request = _plain_request(document, model_name)
    if request is not None:
        return request
    try:
        parsed = InferenceRequest.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    return InferRequest.from_inference_request(parsed, model_name)


_DIGITS = bytes(0x31 if 0x30 <= c <= 0x39 else 0x30 for c in range(256))  # digit: "1"
_LONG_RUN = b"1" * 19


def _long_digit_run(body: bytes) -> bool:
    """Whether ``body`` has 19 digits in a row: maybe an integer beyond 64 bits, which orjson
    reads as a float and pydantic as the exact int (a few such bodies, e.g. long numeric ids
    in strings, take pydantic's path needlessly). 1 us for one transaction, 0.1 ms for 1,000.
    """
    return body.translate(_DIGITS).find(_LONG_RUN) >= 0


def _plain_request(document: dict, model_name: str) -> InferRequest | None:
    """``document`` as ``InferRequest``, if pydantic would take its values as they are.

    The plain shape: an optional string ``id``; no ``parameters`` or ``outputs`` (absent or
    ``null``); ``inputs`` a list of objects, each with a string ``name`` and ``datatype``, a
    ``shape`` of JSON integers, a ``data`` array and no ``parameters``. Other keys are ignored,
    as pydantic ignores them. ``None``: not plain, let pydantic decide.
    """
    if document.get("parameters") is not None or document.get("outputs") is not None:
        return None
    request_id = document.get("id")
    inputs = document.get("inputs")
    if (request_id is not None and type(request_id) is not str) or type(inputs) is not list:
        return None
    tensors = []
    for item in inputs:
        if type(item) is not dict or item.get("parameters") is not None:
            return None
        name, datatype, shape, data = (
            item.get("name"),
            item.get("datatype"),
            item.get("shape"),
            item.get("data"),
        )
        if type(name) is not str or type(datatype) is not str or type(data) is not list:
            return None
        column = type(shape) is list and len(shape) == 1 and type(shape[0]) is int  # [n], fast
        if not column and (type(shape) is not list or not all(type(d) is int for d in shape)):
            return None
        if datatype == "FP16" and data:  # from_inference_request refuses it: let it say so
            return None
        tensors.append(InferInput(name, shape, datatype, data, {}))
    return InferRequest(model_name, tensors, request_id=request_id, parameters=None)


def encode_response(response: object) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers KServe's route writes for what a model's ``__call__`` returned.

    Args:
        response: A V1 dict, bytes or a string, or a V2 ``InferResponse``.

    Returns:
        The body, and the ``content-type`` (and for binary tensor outputs
        ``inference-header-content-length``) headers as ASGI header pairs.
    """
    if isinstance(response, dict):
        return orjson.dumps(response), list(_JSON)
    if isinstance(response, bytes | str):  # as KServe's routes: the model's bytes as they are
        return response if isinstance(response, bytes) else response.encode(), []
    content = _rest_json(response)
    if content is not None:
        return content, list(_JSON)
    rest, json_length = response.to_rest()  # an InferResponse
    if isinstance(rest, bytes):  # binary tensor outputs were asked for
        return rest, [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(json_length).encode()),
        ]
    return InferenceResponse.model_validate(rest).model_dump_json().encode(), list(_JSON)


def _rest_json(response: InferResponse) -> bytes | None:
    """The body KServe's V2 route writes for ``response``; ``None``: only KServe's code can tell.

    KServe's route calls ``InferResponse.to_rest()``, which copies every ``BYTES`` tensor
    element by element (``np.nditer``), validates the dict as ``InferenceResponse`` and dumps
    it: about 50 us for one transaction. This writes the same JSON from the numpy arrays, for
    the responses fraudops' model builds: every output a numpy array of its declared datatype
    and shape (``BYTES``: Python strings), no parameters, no requested or binary outputs. For
    anything else (where ``to_rest`` filters, converts or refuses) it returns ``None``.
    """
    if response.parameters or response._requested_outputs or response._use_binary_outputs:
        return None
    if not isinstance(response.id, str) or not isinstance(response.model_name, str):
        return None
    if response.model_version is not None and not isinstance(response.model_version, str):
        return None
    outputs = []
    for output in response.outputs:
        data = output.data
        if (
            not isinstance(data, np.ndarray)
            or output.parameters
            or output._raw_data is not None
            or list(data.shape) != list(output.shape)
        ):
            return None
        values = data.ravel().tolist()  # C order, as to_rest's nditer and flatten
        if output.datatype == "BYTES":
            if data.dtype != object or not all(type(v) is str for v in values):
                return None
        elif output.datatype == "FP16" or _datatype(data.dtype) != output.datatype:
            return None
        outputs.append(
            {
                "name": output.name,
                "shape": output.shape,
                "datatype": output.datatype,
                "parameters": None,
                "data": values,
            }
        )
    return orjson.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "parameters": None,
            "outputs": outputs,
        }
    )


def _handler(handlers: dict[Any, Callable], error: Exception) -> Callable | None:
    # the class's own handler, or its nearest base's; not the catch-all Exception handler:
    # an unexpected error goes up to the middleware, as it would from KServe's route
    for cls in type(error).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}
