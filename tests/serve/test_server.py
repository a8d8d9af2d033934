"""`nextvlad serve` as a real uvicorn process: the protocol's routes, JSON and binary infer,
tritonclient's round trip, batching, errors of each kind, the body limit, metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serve.conftest import (
    NUM_CLASSES,
    REQUEST_TIMEOUT,
    Runs,
    Server,
    frames,
    infer_binary,
    infer_json,
    offline,
    probabilities_of,
    serving,
)

NAME = "tiny-frame"  # the default name: the run folder's
INFER = f"/v2/models/{NAME}/infer"
LIMIT = 1 << 20  # --max-body-mb 1


@pytest.fixture(scope="module")
def server(runs: Runs) -> Iterator[Server]:
    args = ["--checkpoint", runs.frame, "--vocabulary", runs.vocabulary, "--max-body-mb", "1"]
    args += ["--max-batch-size", "16", "--max-delay-ms", "40"]
    with serving(*args) as s:
        yield s


def post(server: Server, body: bytes | dict, headers: dict | None = None) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(server.url + INFER, json=body, timeout=REQUEST_TIMEOUT)
    return httpx.post(server.url + INFER, content=body, headers=headers, timeout=REQUEST_TIMEOUT)


def test_health_and_metadata(server: Server) -> None:
    get = lambda path: httpx.get(server.url + path, timeout=REQUEST_TIMEOUT)  # noqa: E731
    assert get("/v2/health/live").json() == {"live": True}
    ready = get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = get("/v2").json()
    assert meta["name"] == "nextvlad" and "binary_tensor_data" in meta["extensions"]
    model = get(f"/v2/models/{NAME}").json()
    assert model["name"] == NAME and model["versions"] == ["1"]
    assert model["inputs"] == [
        {"name": "rgb", "datatype": "UINT8", "shape": [-1, -1, 1024]},
        {"name": "audio", "datatype": "UINT8", "shape": [-1, -1, 128]},
        {"name": "num_frames", "datatype": "INT32", "shape": [-1]},
    ]
    assert model["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, NUM_CLASSES]}
    ]
    assert model["parameters"]["input_datatypes"] == ["UINT8", "FP32"]
    assert get(f"/v2/models/{NAME}/versions/1").json() == model
    assert get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    for path in ("/v2/models/other", "/v2/models/other/ready", f"/v2/models/{NAME}/versions/2"):
        response = get(path)
        assert response.status_code == 404 and "unknown model" in response.json()["error"]
    unknown = get("/v3/nothing")
    assert unknown.status_code == 404 and "error" in unknown.json()
    wrong_method = get(INFER)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    rgb, audio = frames(0, 1, 3)
    other = httpx.post(server.url + "/v2/models/other/infer", json=infer_json(rgb, audio))
    assert other.status_code == 404 and "'other'" in other.json()["error"]


def test_json_infer_is_predicts_forward_with_top_k(server: Server, runs: Runs) -> None:
    rgb, audio = frames(1, 3, 7)
    counts = [7, 3, 0]
    response = post(server, infer_json(rgb, audio, counts, id="req-1", parameters={"top_k": 4}))
    document = response.json()
    assert document["model_name"] == NAME and document["id"] == "req-1"
    outputs = {o["name"]: o for o in document["outputs"]}
    assert set(outputs) == {"probabilities", "top_k_indices", "top_k_scores", "top_k_labels"}
    want = offline(runs.frame, rgb, audio, counts)
    got = probabilities_of(response)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    indices = np.asarray(outputs["top_k_indices"]["data"]).reshape(3, 4)
    assert outputs["top_k_indices"]["datatype"] == "INT64"
    np.testing.assert_array_equal(indices, np.argsort(-got, axis=1, kind="stable")[:, :4])
    scores = np.asarray(outputs["top_k_scores"]["data"]).reshape(3, 4)
    np.testing.assert_allclose(scores, np.take_along_axis(got, indices, 1), atol=1e-7)
    labels = np.asarray(outputs["top_k_labels"]["data"]).reshape(3, 4)
    assert labels[0, 0] == f"class {indices[0, 0]}"
    # only the outputs asked for, in binary when asked
    asked = infer_json(rgb, audio, counts, parameters={"top_k": 2})
    asked["outputs"] = [{"name": "top_k_scores", "parameters": {"binary_data": True}}]
    binary = post(server, asked)
    length = int(binary.headers["Inference-Header-Content-Length"])
    head = json.loads(binary.content[:length])
    assert [o["name"] for o in head["outputs"]] == ["top_k_scores"]
    scores2 = np.frombuffer(binary.content[length:], "<f4").reshape(3, 2)
    np.testing.assert_allclose(scores2, scores[:, :2], atol=1e-7)


def test_fp32_dequantised_frames_equal_uint8(server: Server) -> None:
    rgb, audio = frames(2, 2, 5)
    dequantise = lambda q: q.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)  # noqa: E731
    as_uint8 = probabilities_of(post(server, infer_json(rgb, audio, [5, 4])))
    as_fp32 = probabilities_of(post(server, infer_json(dequantise(rgb), dequantise(audio), [5, 4])))
    np.testing.assert_allclose(as_fp32, as_uint8, atol=1e-6, rtol=0)


def test_binary_extension(server: Server, runs: Runs) -> None:
    rgb, audio = frames(3, 2, 9)
    body, headers = infer_binary(rgb, audio, [9, 1])
    response = post(server, body, headers)
    assert response.headers["content-type"] == "application/octet-stream"
    want = offline(runs.frame, rgb, audio, [9, 1])
    np.testing.assert_allclose(probabilities_of(response), want, atol=1e-6, rtol=0)
    body, headers = infer_binary(rgb, audio, [9, 1], binary_output=False)
    as_json = post(server, body, headers)
    assert "Inference-Header-Content-Length" not in as_json.headers
    np.testing.assert_allclose(probabilities_of(as_json), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_round_trip(server: Server, runs: Runs, binary: bool) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=60)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(NAME)
        assert client.get_model_metadata(NAME)["outputs"][0]["name"] == "probabilities"
        rgb, audio = frames(4, 2, 6)
        counts = np.array([6, 2], dtype=np.int32)
        inputs = [
            triton.InferInput("rgb", list(rgb.shape), "UINT8"),
            triton.InferInput("audio", list(audio.shape), "UINT8"),
            triton.InferInput("num_frames", [2], "INT32"),
        ]
        for tensor, array in zip(inputs, (rgb, audio, counts), strict=True):
            tensor.set_data_from_numpy(array, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("probabilities", "top_k_indices", "top_k_labels")
        ]
        result = client.infer(
            NAME, inputs, outputs=outputs, request_id="t1", parameters={"top_k": 3}
        )
    finally:
        client.close()
    want = offline(runs.frame, rgb, audio, [6, 2])
    got = result.as_numpy("probabilities")
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    indices = result.as_numpy("top_k_indices")
    np.testing.assert_array_equal(indices, np.argsort(-got, axis=1, kind="stable")[:, :3])
    labels = result.as_numpy("top_k_labels")
    label = labels[1, 2].decode() if isinstance(labels[1, 2], bytes) else labels[1, 2]
    assert label == f"class {indices[1, 2]}"
    assert result.get_response()["id"] == "t1"


def _metric(server: Server, name: str, suffix: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=REQUEST_TIMEOUT).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name + suffix:
                return float(sample.value)
    raise AssertionError(f"no {name}{suffix}")


def test_batched_equals_unbatched(server: Server) -> None:
    lengths = [1, 40, 7, 23, 2, 15, 31, 9, 4, 12, 38, 5]
    requests = [
        infer_binary(*frames(10 + i, 1 + i % 2, t), [t - (i % 3)] * (1 + i % 2))
        for i, t in enumerate(lengths)
    ]
    before = (
        _metric(server, "nextvlad_batch_requests", "_sum"),
        _metric(server, "nextvlad_batch_requests", "_count"),
    )
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: probabilities_of(post(server, *r)), requests))
    merged = _metric(server, "nextvlad_batch_requests", "_sum") - before[0]
    batches = _metric(server, "nextvlad_batch_requests", "_count") - before[1]
    assert merged == len(requests) and batches < len(requests)  # some were merged
    for request, got in zip(requests, together, strict=True):
        alone = probabilities_of(post(server, *request))
        np.testing.assert_allclose(got, alone, atol=1e-6, rtol=0)


def _tensor(name: str, datatype: str, shape: list[int], data: object) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _good(t: int = 2) -> list[dict]:
    return [
        _tensor("rgb", "UINT8", [1, t, 1024], [0] * (t * 1024)),
        _tensor("audio", "UINT8", [1, t, 128], [0] * (t * 128)),
    ]


def _with(*tensors: dict, t: int = 2) -> dict:
    names = {x["name"] for x in tensors}
    return {"inputs": [x for x in _good(t) if x["name"] not in names] + list(tensors)}


MALFORMED = {
    "bad JSON": (b'{"inputs": [', None, "not valid JSON"),
    "not an object": (b"[1, 2]", None, "JSON object"),
    "no inputs": (b'{"inputs": []}', None, "'inputs'"),
    "wrong datatype": (
        _with(_tensor("rgb", "INT32", [1, 2, 1024], [0] * 2048)),
        None,
        "input 'rgb': datatype INT32",
    ),
    "unknown datatype": (
        _with(_tensor("rgb", "FP8", [1, 2, 1024], [0] * 2048)),
        None,
        "input 'rgb': datatype",
    ),
    "shape and data disagree": (
        _with(_tensor("audio", "UINT8", [1, 2, 128], [0] * 100)),
        None,
        "input 'audio': 100 values",
    ),
    "wrong feature size": (
        _with(_tensor("rgb", "UINT8", [1, 2, 1000], [0] * 2000)),
        None,
        "input 'rgb': shape [1, 2, 1000]",
    ),
    "uint8 out of range": (
        _with(_tensor("rgb", "UINT8", [1, 2, 1024], [300] * 2048)),
        None,
        "input 'rgb': values",
    ),
    "NaN": (
        _with(
            _tensor("rgb", "FP32", [1, 2, 1024], [math.nan] * 2048),
            _tensor("audio", "FP32", [1, 2, 128], [0.0] * 256),
        ),
        None,
        "input 'rgb': NaN",
    ),
    "num_frames out of range": (
        _with(_tensor("num_frames", "INT32", [1], [3])),
        None,
        "input 'num_frames': 3 out of range 0..2",
    ),
    "negative num_frames": (
        _with(_tensor("num_frames", "INT32", [1], [-1])),
        None,
        "input 'num_frames': -1",
    ),
    "num_frames of another batch": (
        _with(_tensor("num_frames", "INT32", [2], [1, 1])),
        None,
        "input 'num_frames': shape",
    ),
    "unknown tensor": (_with(_tensor("depth", "FP32", [1], [0.0])), None, "unknown input 'depth'"),
    "missing tensor": ({"inputs": _good()[:1]}, None, "missing input 'audio'"),
    "frames of two sizes": (
        _with(_tensor("audio", "UINT8", [1, 3, 128], [0] * 384)),
        None,
        "input 'audio': shape [1, 3, 128]",
    ),
    "too many frames": (_with(t=301), None, "input 'rgb': 301 frames"),
    "too many videos": (
        _with(
            _tensor("rgb", "UINT8", [17, 1, 1024], [0] * 17 * 1024),
            _tensor("audio", "UINT8", [17, 1, 128], [0] * 17 * 128),
        ),
        None,
        "input 'rgb': 17 videos",
    ),
    "unknown output": (
        {**_with(), "outputs": [{"name": "logits"}]},
        None,
        "unknown output 'logits'",
    ),
    "top_k out of range": ({**_with(), "parameters": {"top_k": 0}}, None, "top_k 0"),
    "header length not a number": (b'{"inputs": []}', "abc", "Inference-Header-Content-Length"),
    "header length past the body": (b'{"inputs": []}', "999", "Inference-Header-Content-Length"),
    "binary size past the body": (
        b'{"inputs":[{"name":"rgb","datatype":"UINT8","shape":[1,1,1024],"parameters":{"binary_data_size":1024}}]}'
        + b"\0" * 10,
        "104",
        "input 'rgb': binary_data_size 1024",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_400_naming_the_fault(server: Server, case: str) -> None:
    body, header_length, message = MALFORMED[case]
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    response = post(server, raw, headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_binary_size_that_does_not_fit_its_shape(server: Server) -> None:
    rgb, audio = frames(5, 1, 2)
    body, headers = infer_binary(rgb, audio, [2])
    head_length = int(headers["Inference-Header-Content-Length"])
    response = post(server, body[: head_length + 100] + body[head_length + 101 :], headers)
    assert response.status_code == 400
    assert "input" in response.json()["error"]


def test_body_limit_is_413_while_reading(server: Server) -> None:
    rgb, audio = frames(6, 1, 1)
    body, headers = infer_binary(rgb, audio, [1])
    big = body + b"\0" * LIMIT  # declared by its Content-Length
    response = post(server, big, headers)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        for _ in range(8):
            yield b"\0" * (LIMIT // 4)

    streamed = httpx.post(server.url + INFER, content=chunks(), timeout=REQUEST_TIMEOUT)
    assert streamed.status_code == 413
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_metrics_parse_with_prometheus_client(server: Server) -> None:
    rgb, audio = frames(7, 1, 2)
    post(server, infer_json(rgb, audio))
    post(server, b"nonsense")
    text = httpx.get(server.url + "/metrics", timeout=REQUEST_TIMEOUT).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in [
        ("nextvlad_requests", "counter"),
        ("nextvlad_request_duration_seconds", "histogram"),
        ("nextvlad_batch_size", "histogram"),
        ("nextvlad_batch_requests", "histogram"),
        ("nextvlad_queue_depth", "gauge"),
        ("nextvlad_model_load_seconds", "gauge"),
        ("nextvlad_model_warmup_seconds", "gauge"),
    ]:
        assert families[name].type == kind, name
    statuses = {
        (s.labels["endpoint"], s.labels["status"])
        for s in families["nextvlad_requests"].samples
        if s.name == "nextvlad_requests_total"
    }
    assert {("/v2/models/{name}/infer", "200"), ("/v2/models/{name}/infer", "400")} <= statuses
    (load,) = families["nextvlad_model_load_seconds"].samples
    (warmup,) = families["nextvlad_model_warmup_seconds"].samples
    assert load.value > 0 and warmup.value > 0
