#!/usr/bin/env python3
"""Plot the queries of deploy/grafana/keygate.json from a real Prometheus.

Grafana is not needed. The script starts the mock push backend, keygate and
Prometheus on 127.0.0.1 and drives a scripted load of about three minutes
through keygate. Then it runs every panel's PromQL through Prometheus's
range-query API and draws the panels with matplotlib in the dashboard's
layout.

The load walks through the situations the dashboard is for: steady
traffic, a burst of wrong keys, a client over its rate limit, a client
added and a rejected config file, a backend outage and a slow backend.
Every request goes to 127.0.0.1, and each phase is bounded in time and in
requests.

Usage, after `cargo build --release --bin keygate --example mock_push_backend`:

    python3 -m venv target/plot-venv
    target/plot-venv/bin/pip install -r deploy/grafana/requirements.txt
    target/plot-venv/bin/python deploy/grafana/render_dashboard.py \\
        --keygate target/release/keygate \\
        --mock target/release/examples/mock_push_backend \\
        --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
DASHBOARD = Path(__file__).resolve().parent / "keygate.json"

# Grafana computes $__rate_interval from the scrape interval, with four
# scrapes (4 s here) as its lower bound. A little more smooths the lines.
RATE_WINDOW = "10s"
SCRAPE_INTERVAL = "1s"
STEP_SECONDS = 1

START_TIMEOUT_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = 5
WORKERS = 4
# Upper bound of requests in one phase, whatever its length.
MAX_REQUESTS_PER_PHASE = 20_000
PUSH_PATH = "/nps/rest/push/dashboard-demo"
PUSH_BODY = b'{"title": "hello", "body": "dashboard demo"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def api_key(client_id: str, key: str) -> str:
    return base64.b64encode(f"{client_id}:{key}".encode()).decode()


@dataclass
class Client:
    client_id: str
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    rate_limit: str | None = None


def config_text(gateway_port: int, metrics_port: int, backend_port: int,
                clients: list[Client], broken: bool = False) -> str:
    """Return a keygate config. With `broken`, one clientId is listed twice,
    so keygate rejects the file."""
    lines = [
        "gateway:",
        f"  listen: {LOOPBACK}:{gateway_port}",
        f"  upstream: http://{LOOPBACK}:{backend_port}",
        "  healthCheck: { interval: 2s, timeout: 500ms }",
        '  adminAllowFrom: ["127.0.0.1/32"]',
        "  threads: 2",
        "  timeouts: { read: 1s }",
        "  log: { level: warn, access: false }",
        f"  metrics: {{ listen: '{LOOPBACK}:{metrics_port}' }}",
        "allowedClients:",
    ]
    entries = clients + clients[:1] if broken else clients
    for client in entries:
        lines.append(f"  - clientId: {client.client_id}")
        lines.append(f"    key: {client.key}")
        if client.rate_limit:
            lines.append(f"    rateLimit: {client.rate_limit}")
    return "\n".join(lines) + "\n"


def wait_for_http(port: int, path: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: {process.args[0]} exited with {process.returncode} during start-up")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=1)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        time.sleep(0.1)
    sys.exit(f"error: GET {path} on {LOOPBACK}:{port} did not return 200 "
             f"within {START_TIMEOUT_SECONDS} s")


class Load:
    """Worker threads that send a weighted mix of requests to keygate."""

    def __init__(self, gateway_port: int, clients: dict[str, Client]):
        self.gateway_port = gateway_port
        self.clients = clients

    def headers(self, kind: str) -> dict[str, str]:
        alpha = self.clients["alpha"]
        beta = self.clients["beta"]
        headers = {"Content-Type": "application/json"}
        if kind == "good":
            client = random.choice((alpha, beta))
            headers["x-api-key"] = api_key(client.client_id, client.key)
            # A spread of backend times, so that the percentiles differ.
            headers["x-mock-delay-ms"] = str(int(random.expovariate(1 / 8)))
        elif kind == "slow":
            headers["x-api-key"] = api_key(alpha.client_id, alpha.key)
            headers["x-mock-delay-ms"] = str(random.choice((150, 300, 600, 1500)))
        elif kind == "limited":
            gamma = self.clients["gamma"]
            headers["x-api-key"] = api_key(gamma.client_id, gamma.key)
        elif kind == "bad_key":
            headers["x-api-key"] = api_key(alpha.client_id, secrets.token_hex(32))
        elif kind == "unknown_client":
            headers["x-api-key"] = api_key("nobody", secrets.token_hex(32))
        elif kind == "malformed":
            headers["x-api-key"] = "not base64!"
        return headers

    def run(self, seconds: float, rate: float, mix: dict[str, float]) -> None:
        """Send about `rate` requests a second for `seconds`, split over workers."""
        deadline = time.monotonic() + seconds
        per_worker = MAX_REQUESTS_PER_PHASE // WORKERS
        kinds = list(mix)
        weights = [mix[kind] for kind in kinds]

        def worker() -> None:
            connection = None
            interval = WORKERS / rate
            for _ in range(per_worker):
                if time.monotonic() >= deadline:
                    break
                started = time.monotonic()
                kind = random.choices(kinds, weights)[0]
                try:
                    if connection is None:
                        connection = http.client.HTTPConnection(
                            LOOPBACK, self.gateway_port, timeout=REQUEST_TIMEOUT_SECONDS)
                    connection.request("POST", PUSH_PATH, PUSH_BODY, self.headers(kind))
                    response = connection.getresponse()
                    response.read()
                    if response.getheader("Connection", "").lower() == "close":
                        connection.close()
                        connection = None
                except (OSError, http.client.HTTPException):
                    if connection is not None:
                        connection.close()
                    connection = None
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
            if connection is not None:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def refresh(gateway_port: int) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, gateway_port, timeout=REQUEST_TIMEOUT_SECONDS)
    connection.request("POST", "/nps/refresh")
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def query_range(prometheus_port: int, expr: str, start: float, end: float) -> list[dict]:
    params = urllib.parse.urlencode({
        "query": expr.replace("$__rate_interval", RATE_WINDOW).replace("$instance", ".*"),
        "start": f"{start:.3f}",
        "end": f"{end:.3f}",
        "step": str(STEP_SECONDS),
    })
    url = f"http://{LOOPBACK}:{prometheus_port}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:
        body = json.load(response)
    if body.get("status") != "success":
        sys.exit(f"error: Prometheus rejected {expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text


UNIT_LABELS = {"reqps": "requests/s", "s": "seconds", "percentunit": "share", "short": ""}


def plot(panels: list[dict], prometheus_port: int, start: float, end: float,
         out: Path, events: list[tuple[float, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(panels) / 2)
    figure, axes = plt.subplots(rows, 2, figsize=(15, 3.2 * rows), sharex=True)
    figure.suptitle("keygate dashboard (deploy/grafana/keygate.json) over a scripted load",
                    fontsize=13, y=0.99)
    for axis, panel in zip(axes.flat, sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))):
        defaults = panel["fieldConfig"]["defaults"]
        stacked = defaults["custom"]["stacking"]["mode"] == "normal"
        series_list = []
        for target in panel["targets"]:
            for series in query_range(prometheus_port, target["expr"], start, end):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                series_list.append((legend(target["legendFormat"], series["metric"]), times, values))
        series_list.sort(key=lambda item: item[0])
        if stacked and series_list:
            grid = sorted({t for _, times, _ in series_list for t in times})
            stacked_values = []
            for _, times, values in series_list:
                by_time = dict(zip(times, values))
                stacked_values.append([by_time.get(t, 0.0) for t in grid])
            axis.stackplot(grid, stacked_values, labels=[name for name, _, _ in series_list],
                           alpha=0.8)
        else:
            stepped = defaults["custom"].get("lineInterpolation") == "stepAfter"
            for name, times, values in series_list:
                if stepped:
                    axis.step(times, values, where="post", label=name, linewidth=1.2)
                else:
                    axis.plot(times, values, label=name, linewidth=1.2)
        for when, _ in events:
            axis.axvline(when - start, color="grey", linewidth=0.6, linestyle=":")
        axis.set_title(panel["title"], fontsize=10)
        axis.set_ylabel(UNIT_LABELS.get(defaults["unit"], defaults["unit"]), fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        if series_list:
            # Head room above the data, so that the legend covers none of it.
            low, high = axis.get_ylim()
            axis.set_ylim(low, high + (high - low) * 0.45)
            axis.legend(fontsize=7, loc="upper left", ncol=4, framealpha=0.9)
        else:
            axis.text(0.5, 0.5, "no data", transform=axis.transAxes, ha="center")
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the start of the load", fontsize=8)
    timeline = "   ".join(f"{when - start:.0f} s: {event}" for when, event in events)
    figure.text(0.5, 0.965, f"dotted lines: {timeline}", ha="center", fontsize=8,
                color="dimgrey")
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keygate", required=True, type=Path, help="path of the keygate binary")
    parser.add_argument("--mock", required=True, type=Path,
                        help="path of the mock_push_backend example binary")
    parser.add_argument("--out", default=Path("docs/dashboard.png"), type=Path,
                        help="PNG file to write (default: docs/dashboard.png)")
    parser.add_argument("--phase-seconds", default=25.0, type=float,
                        help="length of each load phase in seconds (default: 25)")
    args = parser.parse_args()

    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        sys.exit("error: prometheus not found on PATH; run scripts/setup.sh to install it")

    gateway_port, metrics_port, backend_port, prometheus_port = (free_port() for _ in range(4))
    clients = {name: Client(name) for name in ("alpha", "beta", "gamma")}
    clients["gamma"].rate_limit = "5/s"
    processes: list[subprocess.Popen] = []

    with tempfile.TemporaryDirectory(prefix="keygate-dashboard-") as work:
        work_dir = Path(work)
        config_path = work_dir / "application.yml"

        def write_config(broken: bool = False) -> None:
            temporary = work_dir / "application.yml.tmp"
            temporary.write_text(config_text(gateway_port, metrics_port, backend_port,
                                             list(clients.values()), broken))
            temporary.replace(config_path)

        def start_mock() -> subprocess.Popen:
            mock = subprocess.Popen([str(args.mock), "--listen", f"{LOOPBACK}:{backend_port}"],
                                    stdout=subprocess.DEVNULL,
                                    stderr=(work_dir / "mock.log").open("a"))
            processes.append(mock)
            return mock

        try:
            write_config()
            mock = start_mock()
            keygate = subprocess.Popen([str(args.keygate), "--config", str(config_path)],
                                       stdout=(work_dir / "keygate.log").open("w"),
                                       stderr=subprocess.STDOUT)
            processes.append(keygate)
            wait_for_http(gateway_port, "/nps/health", keygate)

            (work_dir / "prometheus.yml").write_text(
                f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n"
                "scrape_configs:\n  - job_name: keygate\n"
                f"    static_configs:\n      - targets: ['{LOOPBACK}:{metrics_port}']\n")
            prometheus = subprocess.Popen(
                [prometheus_binary, f"--config.file={work_dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work_dir / 'data'}",
                 f"--web.listen-address={LOOPBACK}:{prometheus_port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=(work_dir / "prometheus.log").open("w"))
            processes.append(prometheus)
            wait_for_http(prometheus_port, "/-/ready", prometheus)

            load = Load(gateway_port, clients)
            phase = args.phase_seconds
            events: list[tuple[float, str]] = []
            steady = {"good": 20, "bad_key": 0.4, "unknown_client": 0.3, "missing": 0.2,
                      "malformed": 0.1}
            time.sleep(3)
            start = time.time()

            print("phase: steady traffic", flush=True)
            load.run(phase, 60, steady)
            print("phase: a burst of wrong keys", flush=True)
            events.append((time.time(), "wrong-key burst"))
            load.run(phase, 90, {**steady, "bad_key": 12, "unknown_client": 8})
            print("phase: a client over its rate limit", flush=True)
            events.append((time.time(), "gamma over 5/s"))
            load.run(phase, 80, {**steady, "limited": 8})

            print("event: add a client, refresh; then a rejected file, and its fix", flush=True)
            clients["delta"] = Client("delta")
            write_config()
            events.append((time.time(), f"refresh {refresh(gateway_port)}"))
            load.run(phase / 3, 60, steady)
            write_config(broken=True)
            events.append((time.time(), f"bad file {refresh(gateway_port)}"))
            load.run(phase / 3, 60, steady)
            write_config()
            events.append((time.time(), f"fixed {refresh(gateway_port)}"))
            load.run(phase / 3, 60, steady)

            print("phase: backend outage", flush=True)
            mock.terminate()
            mock.wait(timeout=10)
            events.append((time.time(), "backend stopped"))
            load.run(phase, 60, steady)
            start_mock()
            events.append((time.time(), "backend back"))
            load.run(phase / 2, 60, steady)

            print("phase: slow backend", flush=True)
            events.append((time.time(), "slow backend"))
            load.run(phase, 40, {**steady, "slow": 10})
            load.run(phase / 2, 60, steady)
            time.sleep(3)
            end = time.time()

            plot(dashboard_panels(), prometheus_port, start, end, args.out, events)
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


if __name__ == "__main__":
    main()
