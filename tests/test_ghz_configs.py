"""The ghz load-test configs in benchmarks/ghz/, proven without ghz.

ghz (https://ghz.sh) is not installable here, so these tests do what ghz does
with each config, step by step, against a real ``authz serve`` on the bundled
example policy:

1. read the config file and check every key is one ghz knows (ghz loads it
   with ``configor``, which silently ignores unknown keys: a typo would only
   lose the setting, so it is caught here);
2. load the ``protoset`` into a fresh DescriptorPool (never the default pool,
   which already holds Envoy's types from authz._proto) and find the ``call``;
3. build the call data as ghz does: ``json.Marshal`` of ``data``; an array is
   split into its elements and request *i* uses element ``i mod len``; the
   element (or object) is run through the Go template with that call's data
   (``.RequestNumber`` = i, counted from 0; ``.UUID`` one UUID per call) and
   functions (``newUUID``: a new UUID per use), then parsed with the protobuf
   JSON mapping into the request type from the protoset;
4. send the serialized bytes with a generic unary call and read the answer
   with the response type from the protoset.

Only the template actions the configs use are implemented; any other one
fails the test (ghz would send the unrendered text).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from testkit.paths import EXAMPLES, REPO
from testkit.procs import Authz

GHZ_DIR = REPO / "benchmarks" / "ghz"
PROTOS = REPO / "protos"
PROTOSET = PROTOS / "envoy_ext_authz.protoset"
#: The file of the Authorization service: its import path among the vendored
#: .proto files (protos/vendor/), which is also the generated module's path.
SERVICE_FILE = "authz/_proto/envoy/service/auth/v3/external_auth.proto"
POLICY = EXAMPLES / "policy.yaml"

# What each committed config must decide: per element of ``data`` (one entry
# for an object), the CheckResponse.status code and reason. A new config file
# without an entry here fails test_every_config_has_expectations.
ALLOW = (0, "")
SCENARIOS: dict[str, list[tuple[int, str]]] = {
    "allow.json": [ALLOW],
    "deny.json": [(16, "missing_credential"), (7, "no_permission")],
    "cache-miss.json": [ALLOW],
    "cache-miss-tokens.json": [ALLOW],  # every element
}

# The keys ghz accepts in a --config file: the json tags of ``type Config``
# in ghz's runner/config.go (github.com/bojand/ghz, commit
# 37ed69e00c424407cccf45a177be4a72b2d54e39), with the Go type of each, which
# decides what value the key takes. ``BinData`` (json:"-") cannot be set from
# a file. Later ghz releases add keys (e.g. count-errors, stream-call-count,
# documented in www/docs/options.md); these configs use none of them.
_STR, _BOOL, _UINT, _INT, _DURATION, _STRMAP, _STRLIST, _DATA = (
    "string", "bool", "uint", "int", "duration", "map[string]string", "[]string", "data")
GHZ_CONFIG_KEYS: dict[str, str] = {
    "proto": _STR, "protoset": _STR, "call": _STR, "cacert": _STR, "cert": _STR, "key": _STR,
    "skipTLS": _BOOL, "skipFirst": _UINT, "cname": _STR, "authority": _STR, "insecure": _BOOL,
    "total": _UINT, "async": _BOOL, "concurrency": _UINT, "concurrency-schedule": _STR,
    "concurrency-start": _UINT, "concurrency-end": _UINT, "concurrency-step": _INT,
    "concurrency-step-duration": _DURATION, "concurrency-max-duration": _DURATION,
    "connections": _UINT, "rps": _UINT, "duration": _DURATION, "duration-stop": _STR,
    "max-duration": _DURATION, "timeout": _DURATION, "data": _DATA, "data-file": _STR,
    "binary-file": _STR, "metadata": _STRMAP, "metadata-file": _STR, "stream-interval": _DURATION,
    "output": _STR, "format": _STR, "connect-timeout": _DURATION, "keepalive": _DURATION,
    "cpus": _UINT, "import-paths": _STRLIST, "name": _STR, "tags": _STRMAP,
    "reflect-metadata": _STRMAP, "debug": _STR, "host": _STR, "enable-compression": _BOOL,
    "load-schedule": _STR, "load-start": _UINT, "load-end": _UINT, "load-step": _INT,
    "load-step-duration": _DURATION, "load-max-duration": _DURATION,
}
# Go's time.ParseDuration syntax.
_GO_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$|^0$")


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _configs() -> list[Path]:
    return sorted(GHZ_DIR.glob("*.json"))


def _load_config(path: Path) -> dict[str, Any]:
    config = json.loads(path.read_text())
    assert isinstance(config, dict), f"{path.name}: a ghz config is a JSON object"
    return config


# -- what ghz checks in a config ---------------------------------------------------------


def validate_config(config: dict[str, Any], name: str) -> None:
    """Every key known to ghz with a value of its type, and the checks ghz's
    runner.NewConfig / LoadConfig make, plus what running against authz
    needs (plaintext, a protoset that exists)."""
    unknown = sorted(set(config) - set(GHZ_CONFIG_KEYS))
    assert not unknown, f"{name}: keys ghz does not know (it would silently ignore them): {unknown}"
    for key, value in config.items():
        kind = GHZ_CONFIG_KEYS[key]
        where = f"{name}: {key}={value!r}"
        if kind == _STR:
            assert isinstance(value, str), f"{where}: ghz wants a string"
        elif kind == _BOOL:
            assert isinstance(value, bool), f"{where}: ghz wants true or false"
        elif kind in (_UINT, _INT):
            assert isinstance(value, int) and not isinstance(value, bool), f"{where}: ghz wants an integer"
            assert kind == _INT or value >= 0, f"{where}: ghz wants a non-negative integer"
        elif kind == _DURATION:
            assert isinstance(value, str) and _GO_DURATION.match(value), f"{where}: ghz wants a Go duration like 30s"
        elif kind == _STRMAP:
            assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), f"{where}: string map"
        elif kind == _STRLIST:
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{where}: string list"
        elif kind == _DATA:  # runner.checkData
            if isinstance(value, list):
                assert value, f"{name}: ghz rejects an empty data array"
                assert all(isinstance(v, dict) for v in value), f"{name}: data array elements must be objects"
            else:
                assert isinstance(value, dict), f"{name}: data must be an object or an array of objects"
    assert config.get("call"), f"{name}: call required"
    assert config.get("host"), f"{name}: host required"
    assert config.get("connections", 1) <= config.get("concurrency", 50), \
        f"{name}: ghz refuses more connections than concurrency"
    assert config.get("insecure") is True, f"{name}: authz serves plaintext gRPC; ghz needs insecure: true"
    assert "proto" not in config and config.get("protoset") == "protos/envoy_ext_authz.protoset", \
        f"{name}: use the committed protoset (paths are relative to the repository root, where ghz runs)"
    assert "data" in config and "data-file" not in config, f"{name}: the call data belongs in the file"
    assert "duration" in config or "total" in config, f"{name}: say how long the run is"


# -- the protoset and the call ------------------------------------------------------------


def load_protoset(path: Path = PROTOSET) -> descriptor_pool.DescriptorPool:
    """The protoset's files in a fresh pool; Add fails on a file whose imports
    are not in the pool yet, so this also proves the file order."""
    file_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in file_set.file:
        pool.Add(file)
    return pool


class Call:
    """ghz's ``call`` ('package.Service.Method' or 'package.Service/Method')
    resolved in the protoset pool: the gRPC path and the message classes."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, call: str) -> None:
        service_name, _, method_name = call.rpartition("/") if "/" in call else call.rpartition(".")
        service = pool.FindServiceByName(service_name)
        method = service.FindMethodByName(method_name)
        assert method is not None, f"{call}: no such method"
        assert not method.client_streaming and not method.server_streaming, f"{call}: not unary"
        self.path = f"/{service.full_name}/{method.name}"
        self.request_class = message_factory.GetMessageClass(method.input_type)
        self.response_class = message_factory.GetMessageClass(method.output_type)

    def invoke(self, channel: grpc.Channel, request: bytes) -> Any:
        rpc = channel.unary_unary(self.path, request_serializer=None,
                                  response_deserializer=self.response_class.FromString)
        return rpc(request, timeout=10)


# -- ghz's call data ----------------------------------------------------------------------


class UnsupportedTemplate(AssertionError):
    pass


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class CallData:
    """The template data of one call (ghz runner/calldata.go): the fields and
    functions the configs use, with ghz's meaning."""

    def __init__(self, request_number: int) -> None:
        self.request_number = request_number
        self.uuid = str(uuid.uuid4())  # .UUID: one per call

    def evaluate(self, action: str) -> str:
        if action == ".RequestNumber":
            return str(self.request_number)
        if action == ".UUID":
            return self.uuid
        if action == "newUUID":  # a new UUID at each use
            return str(uuid.uuid4())
        raise UnsupportedTemplate(f"template action {{{{{action}}}}} is not emulated; teach CallData first")

    def render(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1) or match.group(3):
                raise UnsupportedTemplate("whitespace-trimming actions are not emulated")
            return self.evaluate(match.group(2))

        return _ACTION.sub(replace, text)


def _go_json(value: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, <, >, & escaped."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


class GhzRun:
    """A config as ghz runs it: request *i* as the bytes ghz would send."""

    def __init__(self, config: dict[str, Any], pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self.config = config
        self.call = Call(pool or load_protoset(), config["call"])
        data = _go_json(config["data"])  # runner.WithData
        # runner/data.go newDataProvider: an array is kept as one JSON string per element.
        self.elements = [_go_json(e) for e in json.loads(data)] if data.startswith("[") else [data]
        self.is_array = data.startswith("[")

    def rendered(self, request_number: int) -> str:
        # dataProvider.getDataForCall: the element RequestNumber % len, then the template.
        element = self.elements[request_number % len(self.elements)]
        return CallData(request_number).render(element)

    def message(self, request_number: int) -> Any:
        return json_format.Parse(self.rendered(request_number), self.call.request_class())

    def request(self, request_number: int) -> bytes:
        return bytes(self.message(request_number).SerializeToString())

    def send(self, channel: grpc.Channel, request_number: int) -> Any:
        return self.call.invoke(channel, self.request(request_number))


# -- authz and its metrics ----------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(authz: Authz, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    status, _headers, body = authz.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        have = dict(_LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def cache_counts(authz: Authz, cache: str) -> tuple[float, float]:
    return (metric(authz, "authz_cache_requests_total", cache=cache, outcome="hit"),
            metric(authz, "authz_cache_requests_total", cache=cache, outcome="miss"))


@pytest.fixture(scope="module")
def authz() -> Iterator[Authz]:
    # One worker: one cache, so the cache counters are exact. The configs aim
    # at scripts/demo's 127.0.0.1:9191; here the same requests go to a free port.
    with Authz(POLICY, workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    return load_protoset()


def _bearer_tokens(config: dict[str, Any]) -> list[str]:
    elements = config["data"] if isinstance(config["data"], list) else [config["data"]]
    out = []
    for element in elements:
        value = element["attributes"]["request"]["http"]["headers"].get("authorization")
        if value is not None:
            assert value.startswith("Bearer ")
            out.append(value.removeprefix("Bearer "))
    return out


def _assert_decision(response: Any, expected: tuple[int, str], where: str) -> None:
    code, reason = expected
    assert response.status.code == code, f"{where}: status {response.status.code} {response.status.message!r}"
    if code == 0:
        assert response.WhichOneof("http_response") == "ok_response", where
    else:
        assert response.status.message == reason, where
        assert response.WhichOneof("http_response") == "denied_response", where
        assert response.denied_response.status.code == {16: 401, 7: 403}[code], where


# -- the protoset -------------------------------------------------------------------------


def test_protoset_regenerates_byte_for_byte() -> None:
    generator = _load_module(PROTOS / "generate_protoset.py")
    assert PROTOSET.read_bytes() == generator.protoset_bytes(), \
        "protos/envoy_ext_authz.protoset is stale: run .venv/bin/python protos/generate_protoset.py"


def test_protoset_check_command_agrees() -> None:
    run = subprocess.run([sys.executable, str(PROTOS / "generate_protoset.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_protoset_is_complete_and_in_dependency_order() -> None:
    file_set = descriptor_pb2.FileDescriptorSet.FromString(PROTOSET.read_bytes())
    names = [file.name for file in file_set.file]
    assert len(names) == len(set(names))
    assert names[-1] == SERVICE_FILE
    for index, file in enumerate(file_set.file):
        missing = [dep for dep in file.dependency if dep not in names[:index]]
        assert not missing, f"{file.name} comes before its imports {missing}"
    # Exactly the installed descriptor's transitive imports, and the same content.
    installed: dict[str, Any] = {}

    def visit(fd: Any) -> None:
        if fd.name not in installed:
            installed[fd.name] = fd
            for dep in fd.dependencies:
                visit(dep)

    visit(external_auth_pb2.DESCRIPTOR)
    assert set(names) == set(installed)
    for file in file_set.file:
        expected = descriptor_pb2.FileDescriptorProto.FromString(installed[file.name].serialized_pb)
        expected.ClearField("options")  # generator-only options are dropped (generate_protoset.normalize)
        assert file == expected, file.name


def test_protoc_links_the_protoset(tmp_path: Path) -> None:
    """protoc (C++, like ghz's Go loader an independent implementation) links
    every file of the set and finds the service's file in it."""
    out = tmp_path / "roundtrip.protoset"
    run = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--descriptor_set_in={PROTOSET}", "--include_imports",
         f"--descriptor_set_out={out}", SERVICE_FILE],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, f"grpcio-tools (a dev dependency) must be installed: {run.stderr}"
    ours = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(PROTOSET.read_bytes()).file]
    theirs = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file]
    assert theirs == ours


def test_the_call_resolves_in_a_fresh_pool(pool: descriptor_pool.DescriptorPool) -> None:
    call = Call(pool, "envoy.service.auth.v3.Authorization.Check")
    assert call.path == "/envoy.service.auth.v3.Authorization/Check"
    assert Call(pool, "envoy.service.auth.v3.Authorization/Check").path == call.path
    assert call.request_class.DESCRIPTOR.full_name == "envoy.service.auth.v3.CheckRequest"
    assert call.response_class.DESCRIPTOR.full_name == "envoy.service.auth.v3.CheckResponse"
    # Classes of the protoset's own pool, not authz._proto's generated ones.
    assert call.request_class is not external_auth_pb2.CheckRequest
    assert call.request_class.DESCRIPTOR.file.pool is pool


# -- the template emulation ---------------------------------------------------------------


def test_call_data_semantics() -> None:
    data = CallData(7)
    assert data.render('{"n":"{{.RequestNumber}}"}') == '{"n":"7"}'
    same = data.render("{{.UUID}} {{ .UUID }}").split()
    assert same[0] == same[1] and uuid.UUID(same[0])
    assert CallData(8).render("{{.UUID}}") != same[0]
    fresh = data.render("{{newUUID}} {{newUUID}}").split()
    assert fresh[0] != fresh[1] and all(uuid.UUID(u) for u in fresh)
    with pytest.raises(UnsupportedTemplate):
        data.render("{{randomString 8}}")


def test_array_data_is_round_robin(pool: descriptor_pool.DescriptorPool) -> None:
    run = GhzRun(_load_config(GHZ_DIR / "deny.json"), pool)
    methods = [run.message(i).attributes.request.http.method for i in range(5)]
    assert methods == ["GET", "POST", "GET", "POST", "GET"]


# -- the configs --------------------------------------------------------------------------


def test_every_config_has_expectations() -> None:
    assert sorted(p.name for p in _configs()) == sorted(SCENARIOS)


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.name)
def test_config_is_valid_for_ghz(path: Path, pool: descriptor_pool.DescriptorPool) -> None:
    config = _load_config(path)
    validate_config(config, path.name)
    assert (REPO / config["protoset"]).is_file()
    run = GhzRun(config, pool)
    # Every element renders and parses into a CheckRequest (as ghz does on each call).
    for i in range(len(run.elements)):
        run.message(i)


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.name)
def test_config_targets_the_demo(path: Path) -> None:
    demo = (REPO / "scripts" / "demo").read_text()
    port = re.search(r"GRPC_PORT=\$\{GRPC_PORT:-(\d+)\}", demo)
    assert port, "scripts/demo no longer names its gRPC port"
    assert _load_config(path)["host"] == f"127.0.0.1:{port.group(1)}"


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.name)
def test_committed_tokens_are_long_lived_dev_tokens(path: Path) -> None:
    policy_issuer = "https://dev.authz.example"
    for token in _bearer_tokens(_load_config(path)):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["iss"] == policy_issuer, "only the example's dev issuer"
        years_left = (claims["exp"] - time.time()) / (365 * 24 * 3600)
        assert years_left > 2, f"{path.name}: a token expires in {years_left:.1f} years: mint new ones (README)"


# -- against a real authz -----------------------------------------------------------------


@pytest.mark.integration
def test_allow_is_allowed_from_the_cache(authz: Authz, pool: descriptor_pool.DescriptorPool) -> None:
    run = GhzRun(_load_config(GHZ_DIR / "allow.json"), pool)
    sent = 10
    hits, misses = cache_counts(authz, "decisions")
    allowed = metric(authz, "authz_decisions_total", reason="allowed")
    for i in range(sent):
        response = run.send(authz.channel, i)
        _assert_decision(response, ALLOW, f"allow.json request {i}")
        upstream = {h.header.key: h.header.value for h in response.ok_response.headers}
        assert upstream["x-user-id"] == "ghz-reader"
    hits2, misses2 = cache_counts(authz, "decisions")
    assert misses2 - misses <= 1 and hits2 - hits >= sent - 1, "allow.json should be the cache-hit path"
    assert metric(authz, "authz_decisions_total", reason="allowed") - allowed == sent


@pytest.mark.integration
def test_deny_is_denied(authz: Authz, pool: descriptor_pool.DescriptorPool) -> None:
    run = GhzRun(_load_config(GHZ_DIR / "deny.json"), pool)
    expected = SCENARIOS["deny.json"]
    before = {reason: metric(authz, "authz_decisions_total", reason=reason) for _code, reason in expected}
    sent = 6
    for i in range(sent):
        message = run.message(i)
        response = run.call.invoke(authz.channel, message.SerializeToString())
        _assert_decision(response, expected[i % len(expected)], f"deny.json request {i}")
        if response.status.code == 16:
            headers = {h.header.key: h.header.value for h in response.denied_response.headers}
            assert headers["www-authenticate"].startswith("Bearer")
        # Each denial names its own request (the x-request-id template), cached or not.
        body = json.loads(response.denied_response.body)
        assert body["request_id"] == message.attributes.request.http.headers["x-request-id"]
    for _code, reason in expected:
        assert metric(authz, "authz_decisions_total", reason=reason) - before[reason] == sent // len(expected)


@pytest.mark.integration
def test_cache_miss_misses_every_time(authz: Authz, pool: descriptor_pool.DescriptorPool) -> None:
    run = GhzRun(_load_config(GHZ_DIR / "cache-miss.json"), pool)
    sent = 20
    paths = {run.message(i).attributes.request.http.path for i in range(sent)}
    assert len(paths) == sent
    hits, misses = cache_counts(authz, "decisions")
    for i in range(sent):
        _assert_decision(run.send(authz.channel, i), ALLOW, f"cache-miss.json request {i}")
    hits2, misses2 = cache_counts(authz, "decisions")
    assert misses2 - misses == sent
    assert hits2 == hits


def _send_all_tokens(authz: Authz, config: dict[str, Any], pool: descriptor_pool.DescriptorPool, name: str) -> None:
    """Send the whole run (total requests) and check each is allowed, each
    misses the decision cache and each presents a token not verified before."""
    run = GhzRun(config, pool)
    tokens = _bearer_tokens(config)
    assert len(tokens) == len(run.elements) == config["total"], f"{name}: total must equal the number of tokens"
    assert "duration" not in config and "max-duration" not in config, f"{name}: a duration would reuse tokens"
    assert len(set(tokens)) == len(tokens), f"{name}: tokens repeat"
    assert len({jwt.decode(t, options={"verify_signature": False})["sub"] for t in tokens}) == len(tokens)
    decision_hits, decision_misses = cache_counts(authz, "decisions")
    _token_hits, token_misses = cache_counts(authz, "tokens")
    for i in range(config["total"]):
        _assert_decision(run.send(authz.channel, i), ALLOW, f"{name} request {i}")
    assert cache_counts(authz, "decisions") == (decision_hits, decision_misses + config["total"])
    assert cache_counts(authz, "tokens")[1] - token_misses == config["total"]


@pytest.mark.integration
def test_cache_miss_tokens_verifies_a_new_token_every_time(authz: Authz, pool: descriptor_pool.DescriptorPool) -> None:
    config = _load_config(GHZ_DIR / "cache-miss-tokens.json")
    _send_all_tokens(authz, config, pool, "cache-miss-tokens.json")


def test_cache_miss_tokens_is_make_tokens_output() -> None:
    """The committed file is what make_tokens.py makes from cache-miss.json
    today: only the tokens differ from a fresh run."""
    make_tokens = _load_module(GHZ_DIR / "make_tokens.py")
    committed = _load_config(GHZ_DIR / "cache-miss-tokens.json")
    assert make_tokens.build_config(_bearer_tokens(committed)) == committed
    assert make_tokens.dumps(committed) == (GHZ_DIR / "cache-miss-tokens.json").read_text()


@pytest.mark.integration
def test_make_tokens_writes_unique_allowed_tokens(tmp_path: Path, authz: Authz,
                                                  pool: descriptor_pool.DescriptorPool) -> None:
    out = tmp_path / "tokens.json"
    run = subprocess.run([sys.executable, str(GHZ_DIR / "make_tokens.py"), "--count", "7", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    config = _load_config(out)
    validate_config(config, out.name)
    tokens = _bearer_tokens(config)
    assert len(tokens) == 7
    assert not set(tokens) & set(_bearer_tokens(_load_config(GHZ_DIR / "cache-miss-tokens.json")))
    for token in tokens:
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 10 * 365 * 24 * 3600
    _send_all_tokens(authz, config, pool, out.name)
