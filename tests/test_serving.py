"""The model server as a real process on loopback: scoring, errors, metrics, log, log sink.

One server (``python -m serving``) loads a tiny bundle trained in this module from an S3 store
(moto's S3 server on 127.0.0.1) and writes its inference log there. Clients are KServe's own
REST client (V1), the Open Inference Protocol client of ``tritonclient.http`` (V2) and
KServe's gRPC client (V2 over gRPC); scores,
decisions, reason codes and the logged features are compared with batch scoring of the same
transactions. Other processes: a server stopped with SIGTERM (records in = records stored), a
server refusing a tampered bundle, and the KServe-logger sink fed with real CloudEvents.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import (
    ROOT,
    ServerProcess,
    free_port,
    instance,
    later_transactions,
    shared_model,
    tensors,
)

from components.bundle import fetch_bundle
from components.features import compute_features
from components.inference_log import REQUEST_TYPE, RESPONSE_TYPE, read_frame, read_records
from components.scoring import reason_codes
from components.store import LocalStore, open_store
from serving.log_follow import LABEL_OUTCOMES

MODEL = "fraud"
MAX_BATCH = 64
MAX_BODY = 1_000_000
BUCKET = "s3://fraudops-serving/registry"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_model(tmp_path_factory, MODEL)


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    store = LocalStore(trained.store)
    return fetch_bundle(store, MODEL, "champion", tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def s3_store(trained, s3_env):
    """The registered bundle copied into an S3 bucket (moto on loopback)."""
    source = LocalStore(trained.store)
    target = open_store(BUCKET, env=s3_env)
    for key in source.list(f"models/{MODEL}/"):
        target.put_bytes(key, source.get_bytes(key))
    return target


@pytest.fixture(scope="module")
def server(s3_store, s3_env, tmp_path_factory):
    proc = ServerProcess(
        "serving",
        [
            "--model_uri",
            f"{BUCKET}#{MODEL}:champion",
            "--host",
            "127.0.0.1",
            "--log_flush_interval",
            "0.3",
            "--log_features",
            "true",
            "--max_batch",
            str(MAX_BATCH),
            "--max_body_bytes",
            str(MAX_BODY),
            "--bundle_dir",
            str(tmp_path_factory.mktemp("bundles")),
            "--enable_grpc",
            "true",
        ],
        tmp_path_factory.mktemp("logs") / "server.log",
        env=s3_env,
        ready_path=f"/v1/models/{MODEL}",
    )
    try:
        proc.wait_ready(90)
        yield proc
    finally:
        proc.stop()


def _valid(tag: str = "", amount: float = 20.0) -> dict:
    """A valid transaction of a customer and terminal outside the data (no effect on others)."""
    return {
        "transaction_id": f"z-{tag}-{uuid.uuid4().hex[:10]}",
        "timestamp": "2026-05-16T00:00:00Z",
        "customer_id": "ZC-1",
        "terminal_id": "ZT-1",
        "amount": amount,
    }


def _post(server, path: str, body, content_type: str = "application/json", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        server.url + path,
        content=data,
        headers={"content-type": content_type, **headers},
        timeout=30,
    )


V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"


# -- scoring ------------------------------------------------------------------------------


def _v1_requests(server, bodies: list[dict]) -> list[dict]:
    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
        try:
            return [await client.infer(server.url, body, model_name=MODEL) for body in bodies]
        finally:
            await client.close()

    return asyncio.run(run())


def _tensor_values(instances: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """Each field's V2 tensor (``tensors``) with its values as a numpy array."""
    out = []
    for t in tensors(instances):
        if t["datatype"] == "BYTES":
            values = np.array([v.encode() for v in t["data"]], dtype=np.object_)
        else:
            values = np.array([np.nan if v is None else v for v in t["data"]], dtype=np.float64)
            if np.isnan(values).any():
                continue  # leave out an optional numeric field some transactions lack
        out.append((t, values))
    return out


def _v2_request(client, instances: list[dict], binary: bool) -> dict:
    inputs = []
    for t, values in _tensor_values(instances):
        tensor = triton.InferInput(t["name"], t["shape"], t["datatype"])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("score", "reasons")]
    outputs.append(triton.InferRequestedOutput("decision", binary_data=False))
    outputs.append(triton.InferRequestedOutput("transaction_id", binary_data=binary))
    result = client.infer(MODEL, inputs, outputs=outputs)
    reasons = result.as_numpy("reasons")
    return {
        "transaction_id": [_s(v) for v in result.as_numpy("transaction_id")],
        "score": result.as_numpy("score").tolist(),
        "decision": [_s(v) for v in result.as_numpy("decision")],
        "reasons": [[_s(c) for c in row if _s(c)] for row in reasons],
        "model_version": result.get_response()["model_version"],
    }


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _grpc_inputs(instances: list[dict]) -> list[InferInput]:
    inputs = []
    for t, values in _tensor_values(instances):
        tensor = InferInput(t["name"], t["shape"], t["datatype"])
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def _grpc_requests(server, requests: list[list[dict]]) -> list[dict]:
    """Each request's outputs over gRPC, through KServe's own client."""

    async def run():
        client = InferenceGRPCClient(f"127.0.0.1:{server.grpc_port}", timeout=30)
        try:
            assert await client.is_server_ready()
            out = []
            for instances in requests:
                request = InferRequest(model_name=MODEL, infer_inputs=_grpc_inputs(instances))
                result = await client.infer(request)
                outputs = {o.name: o.as_numpy() for o in result.outputs}
                out.append(
                    {
                        "transaction_id": [_s(v) for v in outputs["transaction_id"]],
                        "score": outputs["score"].tolist(),
                        "decision": [_s(v) for v in outputs["decision"]],
                        "reasons": [[_s(c) for c in row if _s(c)] for row in outputs["reasons"]],
                        "model_version": result.model_version,
                    }
                )
            return out
        finally:
            await client.close()

    return asyncio.run(run())


def _rows(out: dict) -> list[dict]:
    """One request's V2 outputs as one dict per transaction."""
    return [
        {"transaction_id": t, "score": s, "decision": d, "reasons": r, "model_version": v}
        for t, s, d, r, v in zip(
            out["transaction_id"],
            out["score"],
            out["decision"],
            out["reasons"],
            [out["model_version"]] * len(out["score"]),
            strict=True,
        )
    ]


def test_v1_and_v2_one_by_one_and_in_batches_match_batch_scoring(server, bundle, s3_store):
    new = later_transactions(260)
    rows = [instance(r) for r in new.to_dict("records")]
    # one by one in time order: 120 over V1 (KServe's client), 40 over V2 (tritonclient,
    # binary and JSON tensors), 10 over V2 on gRPC (KServe's client) and a gRPC batch of 10,
    # then a V1 batch of 40 and a V2 batch of 40
    got: list[dict] = []
    for response in _v1_requests(server, [{"instances": [r]} for r in rows[:120]]):
        assert response["model_name"] == MODEL
        got += response["predictions"]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_model_ready(MODEL)
        for i, row in enumerate(rows[120:160]):
            got += _rows(_v2_request(client, [row], binary=i % 2 == 0))
        for out in _grpc_requests(server, [*([r] for r in rows[160:170]), rows[170:180]]):
            got += _rows(out)
        (batch,) = _v1_requests(server, [{"instances": rows[180:220]}])
        got += batch["predictions"]
        got += _rows(_v2_request(client, rows[220:260], binary=True))
    finally:
        client.close()

    spec, model = bundle.spec(), bundle.model()
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    features = compute_features(new, spec, history=snapshot)
    expected_scores = model.predict(features)
    threshold = bundle.threshold()["threshold"]
    served = pd.DataFrame(got)
    assert served["transaction_id"].tolist() == new["transaction_id"].tolist()
    assert set(served["model_version"]) == {bundle.version}
    np.testing.assert_allclose(served["score"], expected_scores, rtol=1e-6)
    assert (served["decision"] == np.where(expected_scores >= threshold, "alert", "pass")).all()
    assert served["reasons"].tolist() == reason_codes(model, features, 3)
    assert (served["decision"] == "alert").any() and (served["decision"] == "pass").any()

    # the features the server logged are the batch features
    ids = set(new["transaction_id"])
    deadline = time.monotonic() + 20
    while True:
        records = [
            r
            for r in read_records(s3_store, MODEL, bundle.version)
            if r["transaction"]["transaction_id"] in ids
        ]
        if len(records) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(records) == len(ids)
    logged = pd.DataFrame(
        [r["features"] for r in records],
        index=[r["transaction"]["transaction_id"] for r in records],
    ).loc[new["transaction_id"], model.feature_names]
    np.testing.assert_allclose(
        logged.to_numpy(dtype=np.float64),
        features[model.feature_names].to_numpy(dtype=np.float64),
        rtol=1e-6,
        equal_nan=True,
    )
    protocols = {r["transaction"]["transaction_id"]: r["protocol"] for r in records}
    assert protocols[rows[0]["transaction_id"]] == "v1"
    assert protocols[rows[150]["transaction_id"]] == "v2"


def test_v2_metadata_lists_every_input_and_output(server):
    meta = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()
    inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert inputs["amount"] == "FP64" and inputs["timestamp"] == "BYTES"
    assert {"transaction_id", "customer_id", "terminal_id", "channel"} <= set(inputs)
    outputs = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert outputs == {"transaction_id": [-1], "score": [-1], "decision": [-1], "reasons": [-1, 3]}
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}


# -- bad input ----------------------------------------------------------------------------


BAD_REQUESTS = [  # (path, body, content type, status, part of the error message)
    (V1, b'{"instances": [', "application/json", 400, "Unrecognized request format"),
    (V1, b'{"instances": [NaN]}', "application/json", 400, "instance 0: must be a transaction"),
    (V1, b'{"instances": [{"amount": NaN}]}', "application/json", 400, "amount: not a finite"),
    (V1, b'{"instances": [{"amount": NaN, "x": "\\ud800"}]}', "application/json", 400, "format"),
    (V1, b"\xff\xfe", "application/json", 400, "Unrecognized request format"),
    (V1, '{"instances": [NaN]}'.encode("utf-16"), "application/json", 400, "Unrecognized"),
    (V1, {"instances": []}, "application/json", 400, '"instances" is empty'),
    (V1, {"instances": [_valid()] * (MAX_BATCH + 1)}, "application/json", 413, "limit is 64"),
    (V1, {"instances": [_valid()]}, "text/plain", 415, "unsupported content type"),
    (V1, {"instances": [_valid()]}, "application/x-www-form-urlencoded", 415, "must be"),
    (V1, {"instances": [{**_valid(), "amount": -3}]}, "application/json", 400, "amount"),
    (V1, b'{"instances": [' + b" " * MAX_BODY + b"]}", "application/json", 413, "too large"),
    (V2, b'{"inputs": [', "application/json", 400, "JSON"),
    (V2, {"inputs": [{"name": "amount"}]}, "application/json", 400, "inputs.0.shape"),
    (V2, {"inputs": []}, "application/json", 400, "no input tensors"),
    (V2, {"inputs": tensors([_valid()])}, "text/csv", 415, "application/octet-stream"),
    (V2, b'{"a": 1}', "application/octet-stream", 400, "inference-header-content-length"),
    ("/v1/models/nope:predict", {"instances": [_valid()]}, "application/json", 404, "nope"),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status", "expected"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_with_a_message(server, path, body, content_type, status, expected):
    response = _post(server, path, body, content_type)
    assert response.status_code == status, response.text
    assert expected in response.json()["error"]


def _fresh_servers(trained, tmp_path_factory, *variants: list[str]) -> list[ServerProcess]:
    """Servers of the same bundle with no history of requests, one per argument list."""
    procs = []
    try:
        for i, extra in enumerate(variants):
            procs.append(
                ServerProcess(
                    "serving",
                    [
                        *("--model_uri", f"{trained.store}#{MODEL}:champion", "--host"),
                        *("127.0.0.1", "--log_store", "none", "--max_batch", str(MAX_BATCH)),
                        *("--max_body_bytes", str(MAX_BODY), *extra),
                    ],
                    tmp_path_factory.mktemp("logs") / f"server-{i}.log",
                    ready_path=f"/v1/models/{MODEL}",
                )
            )
        for proc in procs:
            proc.wait_ready(90)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs


def test_direct_routes_answer_exactly_as_kserves_routes(trained, tmp_path_factory):
    """The same requests, in the same order, to a server answering plain-JSON scoring requests
    in its middleware (the default) and to one leaving every request to KServe's FastAPI
    routes: the same status, headers that matter and bodies, errors included."""
    rows = [instance(r) for r in later_transactions(80).to_dict("records")]
    event = {  # a structured CloudEvent: both servers leave it to KServe's route
        **{"specversion": "1.0", "id": "ev-1", "source": "test", "type": "score"},
        **{"time": "2026-05-16T00:00:00Z", "data": {"instances": [rows[70]]}},
    }
    requests: list[tuple[str, object, str]] = [
        *((V1, {"instances": [r]}, "application/json") for r in rows[:10]),
        *(
            (V2, {"id": f"r{i}", "inputs": tensors([r])}, "application/json")
            for i, r in enumerate(rows[10:20])
        ),
        (V1, {"instances": rows[20:45]}, "application/json; charset=utf-8"),
        (V2, {"inputs": tensors(rows[45:65])}, ""),  # no content type: read as JSON
        (V2, {"inputs": tensors(rows[65:67]), "outputs": [{"name": "score"}]}, "application/json"),
        (
            V2,
            {"inputs": tensors(rows[67:69]), "parameters": {"binary_data_output": True}},
            "application/json",
        ),
        (V2, {"inputs": tensors(rows[69:70]), "outputs": [{"name": "nope"}]}, "application/json"),
        (V1, event, "application/json"),
        *((path, body, content_type) for path, body, content_type, _, _ in BAD_REQUESTS),
        (
            f"/v2/models/{MODEL}/versions/v1/infer",
            {"inputs": tensors(rows[71:72])},
            "application/json",
        ),
    ]
    direct, kserve_routes = _fresh_servers(
        trained, tmp_path_factory, [], ["--direct_routes", "false"]
    )
    try:
        answers = {}
        for name, proc in (("direct", direct), ("kserve", kserve_routes)):
            answers[name] = [
                _post(proc, path, body, content_type, **{"x-request-id": f"q{i}"})
                for i, (path, body, content_type) in enumerate(requests)
            ]
    finally:
        direct.stop()
        kserve_routes.stop()
    statuses = [r.status_code for r in answers["direct"]]
    assert statuses.count(200) == 25, statuses  # the valid requests were scored...
    assert {400, 404, 413, 415, 501} <= set(statuses)  # ...and the errors are errors
    for i, (a, b) in enumerate(zip(answers["direct"], answers["kserve"], strict=True)):
        what = f"request {i}: {requests[i][0]} {str(requests[i][1])[:80]}"
        assert a.status_code == b.status_code, (what, a.text, b.text)
        assert a.headers.get("inference-header-content-length") == b.headers.get(
            "inference-header-content-length"
        ), what
        if a.headers.get("inference-header-content-length"):  # binary tensor outputs
            assert a.content == b.content, what
        elif a.status_code == 200:
            assert a.json() == b.json(), what
        elif b"not valid JSON" in b.content:  # the two JSON parsers word the problem apart
            assert b"not valid JSON" in a.content, (what, a.text)
        elif isinstance(requests[i][1], bytes) and b"NaN" in requests[i][1]:
            # KServe's route refuses the NaN literal with a position; the direct route reads
            # it as Python's json does (unless orjson could not write it back), so that the
            # message names the transaction and the field
            assert b"Unrecognized request format" in b.content, (what, b.text)
            assert a.json() == b.json() or b"invalid request: instance 0: " in a.content, what
        else:
            assert a.json() == b.json(), what


def test_malformed_binary_v2_header_is_a_400_not_a_500(server):
    response = _post(
        server,
        V2,
        b'{"a": 1}',
        "application/octet-stream",
        **{"inference-header-content-length": "x"},
    )
    assert (
        response.status_code == 400 and "could not decode the request" in response.json()["error"]
    )


NOT_TEXT = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NOT_NUMBER = st.one_of(
    st.booleans(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NEGATIVE = st.floats(allow_nan=False, allow_infinity=False, max_value=-0.001)
WRONG = {
    "transaction_id": NOT_TEXT | st.sampled_from(["", "   ", "x" * 300]),
    "customer_id": NOT_TEXT | st.none() | st.just(""),
    "terminal_id": NOT_TEXT | st.none() | st.just(" "),
    "amount": NOT_NUMBER | st.none() | NEGATIVE,
    "account_balance": NOT_NUMBER,
    "account_age_days": NOT_NUMBER | NEGATIVE,
    "channel": NOT_TEXT
    | st.text(min_size=1, max_size=10).filter(
        lambda s: s.strip().lower() not in ("", "pos", "online", "atm", "mobile")
    ),
    "transaction_type": NOT_TEXT | st.sampled_from(["refund", "gift"]),
    "merchant_category": NOT_TEXT,
    "timestamp": NOT_TEXT
    | st.none()
    | st.sampled_from(
        ["", "2026-13-01T00:00:00Z", "tomorrow", "2999-01-01T00:00:00Z", "1900-01-01"]
    ),
}


@st.composite
def bad_v1(draw):
    """A V1 body with at least one broken transaction, and what the error must mention."""
    n = draw(st.integers(1, 5))
    rows = [_valid(str(i)) for i in range(n)]
    index = draw(st.integers(0, n - 1))
    how = draw(st.sampled_from(["drop", "unknown", "wrong", "wrong", "nonfinite"]))
    if how == "drop":
        field = draw(
            st.sampled_from(["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"])
        )
        del rows[index][field]
        return {"instances": rows}, [f"instance {index}: {field}"]
    if how == "unknown":
        field = draw(st.text("abcxyz_", min_size=1, max_size=8).filter(lambda f: f not in WRONG))
        rows[index][field] = draw(NOT_TEXT)
        return {"instances": rows}, [f"instance {index}: unknown field {field!r}"]
    if how == "nonfinite":  # literals orjson refuses; Python's json writes the last two
        literal = draw(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity"]))
        text = json.dumps({"instances": rows}).replace('"amount": 20.0', f'"amount": {literal}')
        return text.encode(), [f"instance {n - 1}: amount: not a finite number"]
    field = draw(st.sampled_from(sorted(WRONG)))
    rows[index][field] = draw(WRONG[field])
    return {"instances": rows}, [f"instance {index}: {field}"]


@st.composite
def bad_v2(draw):
    rows = [_valid(str(i)) for i in range(draw(st.integers(1, 4)))]
    inputs = tensors(rows)[:5]
    i = draw(st.integers(0, len(inputs) - 1))
    name = inputs[i]["name"]
    how = draw(st.sampled_from(["datatype", "shape", "data", "drop", "value"]))
    if how == "datatype":
        inputs[i]["datatype"] = draw(
            st.sampled_from(["BOOL", "FP64", "BYTES", "INT8"]).filter(
                lambda d: d != inputs[i]["datatype"] and not (d == "INT8" and name == "amount")
            )
        )
    elif how == "shape":
        inputs[i]["shape"] = draw(
            st.lists(st.integers(0, 9), min_size=0, max_size=3).filter(
                lambda s: s not in ([len(rows)], [len(rows), 1])
            )
        )
    elif how == "data":
        inputs[i]["data"] = inputs[i]["data"] + inputs[i]["data"][:1]
    elif how == "drop":
        inputs.pop(i)
        return {"inputs": inputs}, [name, "missing"]
    else:
        inputs[i]["data"][0] = draw(
            st.sampled_from([-1.0, True, "", None, [1, 2], math.nan, math.inf, 2e15])
            if name == "amount"
            else st.sampled_from([5, None, "", True])
        )
    return {"inputs": inputs}, [name]


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(bad_v1().map(lambda b: (V1, *b)), bad_v2().map(lambda b: (V2, *b))))
def test_fuzzed_bad_requests_never_get_a_5xx_and_say_what_is_wrong(server, case):
    path, body, mentions = case
    response = _post(server, path, body)
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["error"]
    for word in mentions:
        assert word in message, (word, message)


@st.composite
def bad_envelope(draw):
    """A request whose transactions are fine but whose envelope is not: an empty or oversized
    batch, JSON cut short, or a wrong content type; and the status and words expected."""
    path = draw(st.sampled_from([V1, V2]))
    how = draw(st.sampled_from(["empty", "oversized", "truncated", "content_type"]))
    n = {"empty": 0, "oversized": MAX_BATCH + draw(st.integers(1, 5))}.get(how, 3)
    rows = [_valid(str(i)) for i in range(n)]
    body = {"instances": rows} if path == V1 else {"inputs": tensors(rows)}
    if how == "empty":
        return path, body, "application/json", 400, ["is empty"]
    if how == "oversized":
        return path, body, "application/json", 413, ["the limit is 64"]
    if how == "truncated":  # cut anywhere before the last byte: never valid JSON
        text = json.dumps(body).encode()
        cut = draw(st.integers(1, len(text) - 1))
        words = ["Unrecognized request format"] if path == V1 else ["JSON"]
        return path, text[:cut], "application/json", 400, words
    kind = draw(st.sampled_from(["text/plain", "text/csv", "application/xml", "image/png"]))
    return path, body, kind, 415, [f"unsupported content type {kind!r}"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(bad_envelope())
def test_fuzzed_bad_envelopes_get_their_4xx_and_say_what_is_wrong(server, case):
    path, body, content_type, status, mentions = case
    response = _post(server, path, body, content_type)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in mentions:
        assert word in message, (word, message)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.floats(0, 1e15),
    st.sampled_from([1e-30, 1e-300, 5e-324, -1e15, 1e15, 0.0, 100.0]),
    st.floats(0, 1e15),
    st.sampled_from([V1, V2]),
)
def test_extreme_but_valid_numbers_are_scored_or_refused_by_name(
    server, amount, balance, age, path
):
    row = {**_valid("x", amount), "account_balance": balance, "account_age_days": age}
    body = {"instances": [row]} if path == V1 else {"inputs": tensors([row])}
    response = _post(server, path, body)
    if response.status_code == 200:
        return
    assert response.status_code == 400, response.text
    assert "feature 'amount_to_balance' overflows the model's float32 input" in response.text


def test_server_keeps_serving_after_bad_requests(server):
    for body in (b"{", b"[]", b'{"instances": 5}', b"\x00" * 100):
        assert _post(server, V1, body).status_code == 400
    response = _post(server, V1, {"instances": [_valid("after")]})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["decision"] in ("alert", "pass")


# -- metrics ------------------------------------------------------------------------------


def _metrics(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(metrics, name, **labels) -> float:
    return sum(
        v
        for (n, ls), v in metrics.items()
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def test_metrics_are_scraped_from_the_server(server):
    before = _metrics(server)
    rows = [_valid(f"m{i}", amount=10.0 + i) for i in range(5)]
    assert _post(server, V1, {"instances": rows}).status_code == 200
    assert _post(server, V2, {"inputs": tensors(rows[:1])}).status_code == 200
    assert _post(server, V1, {"instances": [{**rows[0], "amount": "x"}]}).status_code == 400
    assert _post(server, V1, b"{}", "text/plain").status_code == 415
    after = _metrics(server)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    common = {"model": MODEL, "version": "v1"}
    assert delta("fraudops_serving_transactions_total", protocol="v1", **common) == 5
    assert delta("fraudops_serving_transactions_total", protocol="v2", **common) == 1
    assert delta("fraudops_serving_requests_total", protocol="v1", code="200", **common) == 1
    assert delta("fraudops_serving_requests_total", protocol="v1", code="400", **common) == 1
    assert delta("fraudops_serving_request_duration_seconds_count", protocol="v2", **common) == 1
    assert delta("fraudops_serving_errors_total", kind="invalid_input", protocol="v1") == 1
    assert delta("fraudops_serving_errors_total", kind="unsupported_media_type") == 1
    assert delta("fraudops_serving_score_count", **common) == 6
    assert _value(after, "fraudops_serving_score_bucket", le="+Inf", **common) == _value(
        after, "fraudops_serving_transactions_total", **common
    )
    assert _value(after, "fraudops_serving_alerts_total", **common) >= 0
    assert _value(after, "fraudops_online_state_rows", kind="customer") > 20_000
    assert ("fraudops_inference_log_queued", ()) in after
    assert _value(after, "fraudops_inference_log_dropped_total") == 0
    assert _value(after, "request_predict_seconds_count", model_name=MODEL) > 0  # KServe's own


def test_late_labels_ingested_by_the_cli_reach_the_running_servers_state(
    server, s3_store, s3_env, tmp_path
):
    """`fraudops labels ingest` (a real process) writes to the S3 store; the server reads the
    label file at its next poll and puts each label where it belongs, counted by outcome."""
    rows = [_valid(f"label{i}") for i in range(2)]
    assert _post(server, V1, {"instances": rows}).status_code == 200
    ids = [r["transaction_id"] for r in rows]
    deadline = time.monotonic() + 20
    while not set(ids) <= set(read_frame(s3_store, MODEL, columns=["tx.transaction_id"]).get(
        "tx.transaction_id", pd.Series(dtype=str)
    ).astype(str)):  # fmt: skip
        assert time.monotonic() < deadline, "the server did not log the transactions"
        time.sleep(0.2)
    before = _metrics(server)
    path = tmp_path / "chargebacks.csv"
    pd.DataFrame(
        {
            "transaction_id": [*ids, "never-scored", "scored-elsewhere"],
            "is_fraud": [1, 0, 1, 1],
            "terminal_id": [None, None, None, "ZT-unknown"],
            "timestamp": [None, None, None, "2026-05-16T00:00:00Z"],
        }
    ).to_csv(path, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "fraudops", "labels", "ingest", str(path), "--model", MODEL,
         "--store", BUCKET],
        capture_output=True, text=True, timeout=120, env={**os.environ, **s3_env}, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "labels in 4: matched 2" in done.stdout
    assert "3 with their transaction's terminal and time" in " ".join(done.stdout.split())

    def delta(outcome: str) -> float:
        name = "fraudops_online_state_labels_total"
        return _value(_metrics(server), name, outcome=outcome) - _value(
            before, name, outcome=outcome
        )

    deadline = time.monotonic() + 30  # the server polls every 5 s
    while delta("changed") + delta("unchanged") + delta("not_found") + delta("unplaced") < 4:
        assert time.monotonic() < deadline, {o: delta(o) for o in LABEL_OUTCOMES}
        time.sleep(0.5)
    # the fraud turned its row to 1; the genuine one was presumed so; the label of a
    # transaction the state never saw finds no row; one with no terminal or time is counted
    assert {o: delta(o) for o in LABEL_OUTCOMES} == {
        "changed": 1, "unchanged": 1, "not_found": 1, "unplaced": 1
    }  # fmt: skip


# -- shutdown, bad bundle -----------------------------------------------------------------


def test_sigterm_writes_every_record_before_exiting(trained, tmp_path):
    log_store = tmp_path / "log"
    proc = ServerProcess(  # started through the CLI command `fraudops serve`
        "fraudops serve",
        [
            *("--model", "champion", "--model-name", MODEL),  # an alias of a named model
            "--store",
            str(trained.store),
            "--log-store",
            str(log_store),
            "--",
            "--log_flush_interval",
            "600",  # nothing is written before the shutdown
        ],
        tmp_path / "server.log",
    )
    try:
        proc.wait_ready(90)
        rows = [instance(r) for r in later_transactions(60, seed=8).to_dict("records")]
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for row in rows[:30]:
                assert client.post(V1, json={"instances": [row]}).status_code == 200
            assert client.post(V1, json={"instances": rows[30:45]}).status_code == 200
            assert client.post(V2, json={"inputs": tensors(rows[45:])}).status_code == 200
        assert not read_records(LocalStore(log_store), MODEL)
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    records = read_records(LocalStore(log_store), MODEL)
    assert len(records) == len(rows)
    assert sorted(r["transaction"]["transaction_id"] for r in records) == sorted(
        r["transaction_id"] for r in rows
    )
    assert len({r["id"] for r in records}) == len(rows)


def test_a_tampered_bundle_exits_with_the_reason_when_retries_are_off(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.folder, copy)
    (copy / "model" / "model.json").write_bytes(b"{}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model_uri",
            str(copy),
            "--http_port",
            str(free_port()),
            "--load_retry_seconds",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "model not ready" in result.stderr and "model/model.json has sha256" in result.stderr


def test_a_bundle_that_cannot_load_serves_unready_with_the_reason_until_repaired(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.folder, copy)
    model_file = copy / "model" / "model.json"
    original = model_file.read_bytes()
    model_file.write_bytes(b"{}")
    proc = ServerProcess(
        "serving",
        ["--model_uri", str(copy), "--load_retry_seconds", "0.3", "--enable_grpc", "true"],
        tmp_path / "server.log",
        ready_path="/v2/health/live",  # alive, not ready
    )
    row = instance(later_transactions(1, seed=12).iloc[0])
    try:
        proc.wait_ready(90)
        deadline = time.monotonic() + 30
        while not _value(_metrics(proc), "fraudops_model_load_failures_total", model=MODEL):
            assert time.monotonic() < deadline, proc.output()  # the first, background, attempt
            time.sleep(0.1)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            answers = {
                "server ready": client.get("/v2/health/ready"),
                "v1 model": client.get(f"/v1/models/{MODEL}"),
                "v2 model ready": client.get(f"/v2/models/{MODEL}/ready"),
                "v2 metadata": client.get(f"/v2/models/{MODEL}"),
                "v1 predict": client.post(V1, json={"instances": [row]}),
                "v2 infer": client.post(V2, json={"inputs": tensors([row])}),
            }
            for what, answer in answers.items():
                assert answer.status_code == 503, (what, answer.text)
                error = answer.json()["error"]
                assert f"Model with name {MODEL} is not ready." in error, (what, error)
                assert "model/model.json has sha256" in error, (what, error)
            assert client.get("/v2/health/live").status_code == 200
            ready, answer = _grpc_ready_and_infer(proc, row)
            assert not ready  # gRPC ServerReady as the REST probe
            assert answer.startswith("UNAVAILABLE: Model with name fraud is not ready."), answer
            assert "model/model.json has sha256" in answer
            deadline = time.monotonic() + 30
            while _value(_metrics(proc), "fraudops_model_load_failures_total", model=MODEL) < 3:
                assert time.monotonic() < deadline, proc.output()
                time.sleep(0.2)  # retried in the background, still failing
            metrics = _metrics(proc)
            assert _value(metrics, "fraudops_model_ready", model=MODEL) == 0
            assert _value(metrics, "fraudops_serving_errors_total", kind="not_ready") == 2

            model_file.write_bytes(original)  # repaired: the next attempt loads it
            deadline = time.monotonic() + 60
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, proc.output()
                time.sleep(0.2)
            assert client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
            assert _grpc_ready_and_infer(proc, row) == (True, "OK")
            scored = client.post(V1, json={"instances": [row]})
            assert scored.status_code == 200, scored.text
            assert 0.0 <= scored.json()["predictions"][0]["score"] <= 1.0
            assert _value(_metrics(proc), "fraudops_model_ready", model=MODEL) == 1
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    log = (tmp_path / "server.log").read_text()
    assert "retrying every 0.3 s" in log and f"model {MODEL} is ready (attempt" in log


def _grpc_ready_and_infer(proc, row: dict) -> tuple[bool, str]:
    """gRPC ``ServerReady``, and how ``ModelInfer`` of ``row`` ends (``CODE: details``)."""

    async def run():
        client = InferenceGRPCClient(f"127.0.0.1:{proc.grpc_port}", timeout=10, retries=0)
        try:
            ready = await client.is_server_ready()
            request = InferRequest(model_name=MODEL, infer_inputs=_grpc_inputs([row]))
            try:
                await client.infer(request)
            except grpc.aio.AioRpcError as e:
                return ready, f"{e.code().name}: {e.details()}"
            return ready, "OK"
        finally:
            await client.close()

    return asyncio.run(run())


# -- the log sink -------------------------------------------------------------------------


def _binary_v2(rows: list[dict]) -> tuple[bytes, int]:
    inputs = []
    for t in tensors(rows)[:5]:
        dtype = np.float64 if t["datatype"] == "FP64" else np.object_
        tensor = InferInput(t["name"], t["shape"], t["datatype"])
        tensor.set_data_from_numpy(np.array(t["data"], dtype=dtype), binary_data=True)
        inputs.append(tensor)
    request = InferRequest(MODEL, inputs, parameters={"binary_data_output": True})
    body, length = request.to_rest()
    return body, length


def _logger_headers(eid: str, kind: str, content_type: str, when: datetime) -> dict[str, str]:
    return {
        "ce-id": eid,
        "ce-type": kind,
        "ce-source": "http://localhost:9081/",
        "ce-specversion": "1.0",
        "ce-time": when.isoformat().replace("+00:00", "Z"),
        "ce-inferenceservicename": MODEL,
        "ce-namespace": "fraud",
        "ce-component": "predictor",
        "ce-endpoint": "default",
        "ce-metadata": "{}",
        "content-type": content_type,
    }


def test_log_sink_turns_kserve_logger_events_into_the_same_records(server, s3_store, tmp_path):
    # real scoring requests, with the id KServe's logger would give them
    exchanges = []
    rows = [_valid(f"sink{i}", amount=30.0 + i) for i in range(6)]
    cases = [
        ({"instances": rows[:1]}, "application/json", {}),
        ({"instances": rows[1:3]}, "application/json", {}),
        ({"inputs": tensors(rows[3:4])}, "application/json", {}),
    ]
    body, length = _binary_v2(rows[4:6])
    cases.append(
        (body, "application/octet-stream", {"inference-header-content-length": str(length)})
    )
    for payload, content_type, extra in cases:
        eid = uuid.uuid4().hex
        path = V2 if content_type != "application/json" or "inputs" in payload else V1
        response = _post(server, path, payload, content_type, **{"ce-id": eid}, **extra)
        assert response.status_code == 200, response.text
        request_body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        exchanges.append((eid, request_body, response.content, content_type))

    sink_store = tmp_path / "sink-store"
    sink = ServerProcess(
        "serving.log_sink",
        ["--store", str(sink_store), "--host", "127.0.0.1", "--flush_interval", "600"],
        tmp_path / "sink.log",
        ready_path="/healthz",
    )
    try:
        sink.wait_ready(60)
        t0 = datetime.now(UTC)
        with httpx.Client(base_url=sink.url, timeout=30) as client:
            for k, (eid, request_body, response_body, content_type) in enumerate(exchanges):
                events = [
                    (REQUEST_TYPE, request_body, t0),
                    (RESPONSE_TYPE, response_body, t0 + timedelta(milliseconds=4)),
                ]
                if k % 2:
                    events.reverse()  # the logger's workers do not keep the order
                for kind, data, when in events:
                    answer = client.post(
                        "/", content=data, headers=_logger_headers(eid, kind, content_type, when)
                    )
                    assert answer.status_code in (200, 202), answer.text
            orphan = client.post(
                "/",
                content=json.dumps({"instances": [_valid("orphan")]}).encode(),
                headers=_logger_headers("orphan", REQUEST_TYPE, "application/json", t0),
            )
            assert orphan.status_code == 202
            bad = client.post("/", content=b"{}", headers={"content-type": "application/json"})
            assert bad.status_code == 400 and "error" in bad.json()
            metrics = client.get("/metrics").text
            assert (
                'fraudops_log_sink_events_total{outcome="paired",type="response"}' in metrics
                or ("fraudops_log_sink_events_total" in metrics)
            )
    finally:
        code = sink.stop()
    assert code == 0, sink.output()

    from_sink = {r["id"]: r for r in read_records(LocalStore(sink_store), MODEL)}
    ids = [e[0] for e in exchanges]
    expected_ids = {ids[0], f"{ids[1]}-0", f"{ids[1]}-1", ids[2], f"{ids[3]}-0", f"{ids[3]}-1"}
    assert set(from_sink) == expected_ids
    deadline = time.monotonic() + 20
    while True:
        from_server = {r["id"]: r for r in read_records(s3_store, MODEL) if r["id"] in expected_ids}
        if len(from_server) == len(expected_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ignore = {"time", "latency_ms", "source", "features"}
    for eid in expected_ids:
        mine = {k: v for k, v in from_sink[eid].items() if k not in ignore}
        theirs = {k: v for k, v in from_server[eid].items() if k not in ignore}
        assert mine == theirs, eid
        assert from_sink[eid]["source"] == "http://localhost:9081/"
        assert from_sink[eid]["latency_ms"] == pytest.approx(4.0)


# -- several replicas of a version: the online state in Redis --------------------------------


def test_two_replicas_sharing_redis_score_as_one_server_and_say_when_redis_is_gone(
    trained, bundle, tmp_path_factory
):
    """Two real servers of one version share their online state in a real ``redis-server``.
    Requests alternate between them, as a Service spreads them: every score is the batch
    score over all the traffic (each replica alone would see half of it). With Redis down, or
    back without its data, requests get 503 with the reason, and the servers keep serving;
    they seed Redis again by themselves (one of them) and score again."""
    import redis
    from conftest import start_redis_server

    from serving.redis_state import stored_versions

    redis_server, url = start_redis_server()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    replicas = _fresh_servers(
        trained, tmp_path_factory, ["--state_redis_url", url], ["--state_redis_url", url]
    )
    try:
        new = later_transactions(160)
        rows = [instance(r) for r in new.to_dict("records")]
        got = []
        for i in range(0, 120):  # one by one, alternating
            response = _post(replicas[i % 2], V1, {"instances": [rows[i]]})
            assert response.status_code == 200, response.text
            got += response.json()["predictions"]
        for k, replica in ((120, replicas[0]), (140, replicas[1])):  # a batch on each
            got += _post(replica, V1, {"instances": rows[k : k + 20]}).json()["predictions"]

        spec, model = bundle.spec(), bundle.model()
        snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
        features = compute_features(new, spec, history=snapshot)
        served = pd.DataFrame(got)
        assert served["transaction_id"].tolist() == new["transaction_id"].tolist()
        np.testing.assert_allclose(served["score"], model.predict(features), rtol=1e-6)
        # what sharing changes: one replica's half alone gives other windows
        half = compute_features(new.iloc[0:120:2], spec, history=snapshot)
        columns = [n for n in model.feature_names if "_1d" in n or "_7d" in n]
        assert not np.allclose(
            half[columns].to_numpy(float), features.iloc[0:120:2][columns].to_numpy(float)
        )

        # each replica marks the version served (`fraudops state prune` keeps its rows)
        (stored,) = stored_versions(redis.Redis.from_url(url), MODEL)
        assert int(stored["served"]["by"].rsplit(":", 1)[1]) in {r.proc.pid for r in replicas}

        redis_server.terminate()
        redis_server.wait(10)
        refused = _post(replicas[0], V1, {"instances": [_valid("down")]})
        assert refused.status_code == 503
        assert "cannot be reached" in refused.text and f"127.0.0.1:{port}" in refused.text
        metrics = _metrics(replicas[0])
        assert _value(metrics, "fraudops_serving_errors_total", kind="state_unavailable") == 1

        redis_server, _ = start_redis_server(port)  # back, empty: as without persistence
        refused = _post(replicas[1], V1, {"instances": [_valid("lost")]})
        assert refused.status_code == 503 and "lost its data" in refused.text
        for replica in replicas:
            assert httpx.get(replica.url + "/v2/health/live", timeout=10).status_code == 200
        deadline = time.monotonic() + 60
        answers = [0, 0]
        while answers != [200, 200] and time.monotonic() < deadline:
            answers = [_post(r, V1, {"instances": [_valid("back")]}).status_code for r in replicas]
            assert set(answers) <= {200, 503}
            time.sleep(0.2)
        assert answers == [200, 200]
        logs = [r.log.read_text(errors="replace") for r in replicas]
        seeded = [text.count("snapshot row(s), ") for text in logs]
        again = [text.count("(seeded already)") for text in logs]
        # at start one seeds and the other waits; after the loss one seeds again, and the other
        # waits too or, asked only once it is done, finds it seeded and goes on
        assert sum(seeded) == 2 and sum(again) in (1, 2)
        assert all("Traceback" not in text for text in logs)  # a 503 is not a crash
    finally:
        for replica in replicas:
            replica.stop()
        redis_server.terminate()
        redis_server.wait(10)
