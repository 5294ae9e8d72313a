"""Operability: metrics, access logs, OpenAPI document and docs page, model card.

The exact-count tests run a known mix of requests against a fresh 2-worker gunicorn server
of their own, so that nothing else adds to its counters.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import requests
import yaml
from openapi_spec_validator import validate

from lib.core.example_row import EXAMPLE_ROW
from lib.core.schema import CATEGORICAL_COLUMNS
from service.http.row_schema import RowSchema
from service.ops import access_log
from service.ops.metrics import FLUSH_SECONDS
from service.scoring.predictor import PHASES
from tests.support.live_server import PROJECT_DIR, LiveServer, accepted, wait_for
from tests.support.metrics_text import metric_samples, metric_value

pytestmark = pytest.mark.server

LOG_FIELDS = set(access_log.FIELDS)
# Goes into an unconsumed column of every row: it must never reach the log.
SENTINEL = "payload-sentinel-7f3a9c"
MONITORING = PROJECT_DIR / "deploy" / "monitoring"
OVERFLOW = "json-number-1e999"  # replaced by a bare 1e999 in the encoded body


@dataclass
class Sent:
    """One request of the known mix and its answer."""

    request_id: str
    method: str
    path: str
    body: bytes
    status: int
    answer: bytes
    rows: int = 0
    invalid_rows: int = 0


@dataclass
class Traffic:
    """What the fresh server was sent, what it answered, its metrics and its log."""

    sent: list[Sent] = field(default_factory=list)
    scored_rows: list[dict] = field(default_factory=list)  # the rows answered with a prediction
    positives: int = 0
    samples: dict = field(default_factory=dict)
    log_lines: list[dict] = field(default_factory=list)
    log_text: str = ""
    master_pid: int = 0
    started: float = 0.0  # wall-clock time before the first request and after the last answer
    finished: float = 0.0


def _row(**cells) -> dict:
    row = copy.deepcopy(EXAMPLE_ROW)
    row.update(cells, x99=SENTINEL)
    return row


_REQUEST_NUMBERS = itertools.count()


def _request_id() -> str:
    return f"op-{next(_REQUEST_NUMBERS)}-{time.monotonic_ns()}"


def _record(traffic: Traffic, sent: Sent, scored: list[dict] | None) -> Sent:
    traffic.sent.append(sent)
    if scored is not None:
        traffic.scored_rows += scored
        traffic.positives += sum(a.get("predicted_class", 0) for a in json.loads(sent.answer))
    return sent


def _send(traffic: Traffic, url: str, method: str, path: str, body: bytes = b"", rows: int = 0,
          invalid_rows: int = 0, scored: list[dict] | None = None) -> Sent:
    request_id = _request_id()
    reply = requests.request(method, url + path, data=body or None, timeout=60,
                             headers={"X-Request-ID": request_id, "Content-Type": "application/json"})
    return _record(traffic, Sent(request_id, method, path.split("?")[0], body, reply.status_code, reply.content,
                                 rows, invalid_rows), scored)


def _scrape(url: str) -> dict:
    """The samples of /metrics, less those of /metrics itself (each scrape adds to them)."""
    reply = requests.get(url + "/metrics", timeout=10)
    assert reply.status_code == 200
    return {(name, labels): value for (name, labels), value in metric_samples(reply.text).items()
            if dict(labels).get("endpoint") != "/metrics"}


@pytest.fixture(scope="module")
def traffic(model_dir, test_body, test_rows, tmp_path_factory) -> Traffic:
    """Send the known mix to a fresh 2-worker server, scrape /metrics, stop it, read its log."""
    log_path = tmp_path_factory.mktemp("operability") / "server.log"
    # The metrics directory is gunicorn.conf.py's, as under run_api.sh and in the image (a test
    # that named one hid a /metrics left empty when the variable was set too late).
    live = LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=2, log_path=log_path, metrics_dir=False).start()
    traffic = Traffic(master_pid=live.process.pid, started=time.time())
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    try:
        url = live.url
        # A 10,000-row batch but its last byte: the worker that accepts it waits for the rest, so
        # the single rows go to the other one, and both workers hold samples that /metrics must add up.
        batch = [dict(r, x99=SENTINEL) for r in test_rows]
        big = Sent(_request_id(), "POST", "/predict", json.dumps(batch).encode(), 0, b"", len(batch), 0)
        connection.putrequest("POST", big.path)
        for name, value in (("X-Request-ID", big.request_id), ("Content-Type", "application/json"),
                            ("Content-Length", str(len(big.body)))):
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(big.body[:-1])
        client_port = connection.sock.getsockname()[1]
        wait_for(lambda: accepted(live.port, client_port), 30, "a worker accepting the batch")
        singles = [_row(), _row(x44=None, x31="NA"), _row(x53=5.0, x12="$99,999.00"), _row(x91="nan", x5=None),
                   _row(x56=-40, x58="7.5")]
        for row in singles:
            _send(traffic, url, "POST", "/predict", json.dumps(row).encode(), 1, 0, [row])
        connection.send(big.body[-1:])
        reply = connection.getresponse()
        big.status, big.answer = reply.status, reply.read()
        _record(traffic, big, batch)
        rejected = [_row(x5="xyz"), _row(x12="abc", id=True), _row(x81="Smarch", x44="1e999")]
        _send(traffic, url, "POST", "/predict", json.dumps(rejected).encode(), 3, 3)
        # The invalid middle row's missing x44 and out-of-range x62 must not count as drift.
        inline = [_row(x62=9.0), _row(x81="Smarch", x44=None, x62=9.0, x53=OVERFLOW), _row(x31=None, x12="")]
        body = json.dumps(inline).replace(f'"{OVERFLOW}"', "1e999").encode()
        _send(traffic, url, "POST", "/predict?errors=inline", body, 3, 1, [inline[0], inline[2]])
        _send(traffic, url, "POST", "/predict", b'[{"x5": "monday",', 0, 0)
        _send(traffic, url, "GET", "/health")
        _send(traffic, url, "GET", "/health")
        _send(traffic, url, "GET", "/no-such-page")
        traffic.finished = time.time()
        # The worker that answers /metrics writes its counts first; the other one within
        # FLUSH_SECONDS (counters, then histograms). Settled: every request of the mix counted (not
        # LiveServer's /ready), and the same samples as one flush period before.
        scrapes = [{}]

        def settled() -> dict | None:
            samples = _scrape(url)
            counted = sum(value for (name, labels), value in samples.items() if name == "http_requests_total"
                          and dict(labels)["endpoint"] in ("/predict", "/health", "unmatched"))
            if counted == len(traffic.sent) and samples == scrapes[-1]:
                return samples
            scrapes.append(samples)
            return None

        traffic.samples = wait_for(settled, 60, "/metrics counting every request", interval=FLUSH_SECONDS)
    finally:
        connection.close()
        live.stop()
    traffic.log_text = log_path.read_text()
    traffic.log_lines = [json.loads(line) for line in traffic.log_text.splitlines() if line.startswith("{")]
    return traffic


def sample(traffic: Traffic, name: str, **labels) -> float:
    """The value of one sample; 0 when the series was never written (Prometheus semantics)."""
    return traffic.samples.get((name, tuple(sorted(labels.items()))), 0.0)


def expected_drift(rows: list[dict], stats: dict) -> tuple[dict, dict]:
    """Missing and out-of-range counts per consumed column, computed with the marshmallow schema."""
    consumed = list(stats)
    loaded = RowSchema(only=consumed).load([{c: r.get(c) for c in consumed} for r in rows], many=True)
    missing = {c: 0 for c in consumed}
    outside = {c: 0 for c in consumed if c not in CATEGORICAL_COLUMNS}
    for row in loaded:
        for c in consumed:
            value = row.get(c)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                missing[c] += 1
            elif c in outside and not stats[c]["min"] <= value <= stats[c]["max"]:
                outside[c] += 1
    return missing, outside


def test_request_counts_are_exact_across_workers(traffic):
    assert len({line["pid"] for line in traffic.log_lines}) == 2, "the mix should have reached both workers"
    by_status: dict[tuple[str, str, str], int] = {}
    for s in traffic.sent:
        endpoint = s.path if s.path in ("/predict", "/health") else "unmatched"
        key = (endpoint, s.method, str(s.status))
        by_status[key] = by_status.get(key, 0) + 1
    assert by_status == {("/predict", "POST", "200"): 7, ("/predict", "POST", "422"): 1,
                         ("/predict", "POST", "400"): 1, ("/health", "GET", "200"): 2,
                         ("unmatched", "GET", "404"): 1}
    for (endpoint, method, status), count in by_status.items():
        assert sample(traffic, "http_requests_total", endpoint=endpoint, method=method, status=status) == count
    assert sample(traffic, "http_request_duration_seconds_count", endpoint="/predict") == 9
    assert sample(traffic, "http_request_duration_seconds_sum", endpoint="/predict") > 0


def test_row_counts_and_rejections_by_column_and_reason_are_exact(traffic):
    assert sample(traffic, "predict_rows_scored_total") == 10_000 + 5 + 2
    assert sample(traffic, "predict_rows_invalid_total") == 3 + 1
    assert sample(traffic, "predict_positive_rows_total") == traffic.positives > 0
    # Read requests: the batch, five singles, the 422 and the inline one (not the malformed one).
    assert sample(traffic, "predict_rows_per_request_count") == 8
    assert sample(traffic, "predict_rows_per_request_sum") == 10_000 + 5 + 3 + 3
    rejected = {tuple(sorted(dict(labels).items())): value for (name, labels), value in traffic.samples.items()
                if name == "predict_rows_rejected_total"}
    assert rejected == {
        (("column", "x5"), ("reason", "unknown_category")): 1,
        (("column", "x12"), ("reason", "not_a_number")): 1,
        (("column", "id"), ("reason", "invalid_id")): 1,
        (("column", "x81"), ("reason", "unknown_category")): 2,
        (("column", "x44"), ("reason", "overflow")): 1,
        (("column", "x53"), ("reason", "not_finite")): 1,
    }


def test_phase_histograms_count_every_scored_request(traffic):
    for phase in PHASES:
        assert sample(traffic, "predict_phase_seconds_count", phase=phase) == 7
        assert sample(traffic, "predict_phase_seconds_sum", phase=phase) > 0
        assert sample(traffic, "predict_phase_seconds_bucket", phase=phase, le="+Inf") == 7


def test_missing_and_out_of_range_counts_match_an_independent_count(traffic, stages):
    stats = stages.manifest["column_stats"]
    missing, outside = expected_drift(traffic.scored_rows, stats)
    assert missing["x44"] >= 1 and outside["x53"] >= 1 and outside["x12"] >= 1  # the mix has some of each
    for column, count in missing.items():
        assert sample(traffic, "predict_column_missing_total", column=column) == count, column
    for column, count in outside.items():
        assert sample(traffic, "predict_column_out_of_range_total", column=column) == count, column


def test_model_info_names_the_loaded_model(traffic, stages):
    assert sample(traffic, "model_info", version=stages.version,
                  created_at=stages.manifest["created_at"]) == 1


def test_every_request_has_one_json_log_line_with_its_fields(traffic):
    lines = {line["request_id"]: line for line in traffic.log_lines}
    worker_pids = {line["pid"] for line in traffic.log_lines}
    assert traffic.master_pid not in worker_pids
    for sent in traffic.sent:
        line = lines[sent.request_id]
        assert set(line) == LOG_FIELDS
        assert (line["method"], line["path"], line["status"]) == (sent.method, sent.path, sent.status)
        assert (line["rows"], line["invalid_rows"]) == (sent.rows, sent.invalid_rows)
        assert (line["bytes_in"], line["bytes_out"]) == (len(sent.body), len(sent.answer))
        # Within the mix (the log rounds to the millisecond, and to the microsecond in duration_ms).
        assert traffic.started - 0.001 <= line["time"] <= traffic.finished + 0.001
        assert 0 <= line["duration_ms"] <= (traffic.finished - traffic.started) * 1000 + 0.001


def test_the_log_never_holds_the_payload(traffic):
    assert SENTINEL in traffic.sent[0].body.decode()
    assert SENTINEL not in traffic.log_text
    assert "Smarch" not in traffic.log_text  # nor a rejected value


def test_predict_sends_server_timing_with_every_phase(server):
    request_id = _request_id()
    reply = requests.post(server.url + "/predict", json=EXAMPLE_ROW, headers={"X-Request-ID": request_id}, timeout=10)
    assert reply.status_code == 200
    timing = dict(re.fullmatch(r"(\w+);dur=(\d+\.\d{3})", part.strip()).groups()
                  for part in reply.headers["Server-Timing"].split(","))
    assert list(timing) == list(PHASES)
    # The phases are parts of the request: together no longer than the request the access line
    # times (each figure rounded to the microsecond; the line is written before the answer is sent).
    (line,) = [json.loads(text) for text in server.log_text().splitlines()
               if text.startswith("{") and json.loads(text)["request_id"] == request_id]
    assert sum(float(ms) for ms in timing.values()) <= line["duration_ms"] + 0.0005 * (len(timing) + 1)


def test_model_card_holds_the_manifest_and_the_limits(server, stages):
    card = requests.get(server.url + "/model", timeout=10).json()
    manifest = stages.manifest
    for key in ("model_version", "created_at", "training_data", "variables", "consumed_columns", "column_stats",
                "threshold", "metrics", "library_versions", "files"):
        assert card[key] == manifest[key], key
    assert "golden" not in card
    assert len(card["training_data"]["sha256"]) == 64
    assert all({"name", "coefficient", "std_error"} <= set(v) for v in card["variables"])
    assert set(card["metrics"]["auc"]) == {"train", "val", "test"}
    for column in card["consumed_columns"]:
        stats = card["column_stats"][column]
        if column in CATEGORICAL_COLUMNS:
            assert stats["levels"] == manifest["category_levels"][column]
        else:
            assert stats["min"] < stats["max"] and stats["scale"] > 0
            assert {"impute_value", "center"} <= set(stats)
    assert card["limits"] == {"max_rows": 100_000, "max_body_bytes": 400 * 1024 * 1024, "timeout_seconds": 300,
                              "graceful_timeout_seconds": 30, "max_listed_errors": 100}


def test_openapi_document_is_valid_and_its_examples_score(server):
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    validate(document)
    assert set(document["components"]["schemas"]["Row"]["properties"]) == {f"x{i}" for i in range(100)} | {"id"}
    examples = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for name, example in examples.items():
        reply = requests.post(server.url + "/predict", json=example["value"], timeout=10)
        assert reply.status_code == 200, (name, reply.text)
        RowSchema().load(example["value"], many=isinstance(example["value"], list))


def test_docs_page_and_its_assets_are_served_locally(server):
    page = requests.get(server.url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert requests.get(server.url + "/docs/", timeout=10).text == page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/") for a in assets), "nothing may come from another host"
    for asset in assets:
        reply = requests.get(server.url + asset, timeout=10)
        assert reply.status_code == 200 and len(reply.content) > 100, asset
    assert '"/openapi.json"' in page.text
    assert requests.get(server.url + "/docs/../service/http/docs_page.py", timeout=10).status_code == 404


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_headers_conformance,response_schema_conformance")
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json", "--checks", checks,
         "--max-examples", "30", "--seed", "7", "--workers", "2", "--no-shrink", "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR), "NO_COLOR": "1",
             "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks"},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout


def test_monitoring_profile_scrapes_every_replica_and_charts_exposed_metrics(traffic):
    compose = yaml.safe_load((PROJECT_DIR / "docker-compose.yaml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert compose[name]["profiles"] == ["monitoring"], name
    assert "profiles" not in compose["api"] and "profiles" not in compose["lb"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (api_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    assert api_job["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": 1313, "refresh_interval": "15s"}]
    mounted = {volume.split(":")[0] for volume in compose["grafana"]["volumes"]}
    assert mounted == {"./deploy/monitoring/grafana/provisioning", "./deploy/monitoring/grafana/dashboards"}
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((MONITORING / "grafana/dashboards/batch-predict.json").read_text())
    exposed = {name for name, _ in traffic.samples}
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(?:predict|http|model)_[a-z_]+", target["expr"])}
    assert len(charted) >= 10 and charted <= exposed, charted - exposed


def test_a_405_is_counted_under_its_route_and_a_404_as_unmatched(app):
    client = app.test_client()

    def count(endpoint, method, status):
        return metric_value(client.get("/metrics").get_data(as_text=True), "http_requests_total",
                            endpoint=endpoint, method=method, status=status)

    before = {key: count(*key) for key in [("/predict", "GET", "405"), ("/docs/<path:name>", "DELETE", "405"),
                                           ("unmatched", "GET", "404")]}
    assert client.get("/predict").status_code == 405
    assert client.delete("/docs/index.css").status_code == 405
    assert client.get("/no/such/path").status_code == 404
    assert {key: count(*key) - n for key, n in before.items()} == dict.fromkeys(before, 1)
