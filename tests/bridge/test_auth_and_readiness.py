"""The bearer scheme in any case, gRPC decode errors typed, /readyz silent about the database."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tests.bridge.conftest import BridgeProcess, free_port, post
from tests.bridge.otlp_factory import span, traces

TOKEN = "s3cret-token"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def token_bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_ops_dsn, env={"IPAI_BRIDGE_TOKEN": TOKEN}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(token_bridge: BridgeProcess, scheme: str):
    body = traces([span(error="authenticated")]).SerializeToString()
    status, _, answer = post(token_bridge.url + "/v1/traces", body, headers={"Authorization": f"{scheme} {TOKEN}"})
    assert status == 200, answer
    with grpc.insecure_channel(f"127.0.0.1:{token_bridge.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(traces([span(error="grpc authenticated")]), metadata=[("authorization", f"{scheme} {TOKEN}")])


@pytest.mark.parametrize(
    "header", [f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer{TOKEN}", TOKEN, "bearer", f"Bearer {TOKEN.upper()}"]
)
def test_other_schemes_and_tokens_are_refused(token_bridge: BridgeProcess, header: str):
    body = traces([span(error="refused")]).SerializeToString()
    status, headers, _ = post(token_bridge.url + "/v1/traces", body, headers={"Authorization": header})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")


def test_grpc_undecodable_message_is_invalid_argument(token_bridge: BridgeProcess):
    with grpc.insecure_channel(f"127.0.0.1:{token_bridge.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            export(b"\xff\xff\xff\xff\x0f garbage", metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def _readyz(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("target", ["closed port", "missing database"])
def test_readyz_does_not_reveal_database_user_host_or_name(target: str):
    if target == "closed port":
        dsn = f"postgresql://readyzsecretuser@127.0.0.1:{free_port()}/readyzsecretdb"
    else:
        dsn = "postgresql://postgres@127.0.0.1:5432/readyzsecretdb"
    proc = BridgeProcess(dsn, grpc_port=0).start()
    try:
        status, body = _readyz(proc.url)
    finally:
        proc.stop()
    assert status == 503
    assert json.loads(body)["status"] == "not ready"
    for secret in ("readyzsecretuser", "readyzsecretdb", "postgres", "127.0.0.1", "5432"):
        assert secret not in body, body
    assert "readyzsecretdb" in proc.log.read_text()  # the operator finds the reason in the log
