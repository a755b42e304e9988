"""Every file under examples/deploy/ checked by the tools that exist here: hadolint and the image's own
build steps run in a venv (no Docker daemon here), kubernetes-validate against the Kubernetes schemas,
promtool (config, rules, rule unit tests), the compose-spec schema, and a real Prometheus scraping a
real `cdp run` to evaluate every dashboard panel and every metric the alerts name."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import CDP, ROOT, fake_source_process, read_until_ready
from .pg_server import PostgresServer

DEPLOY = ROOT / "examples" / "deploy"
BIN = Path(sys.executable).parent
METRIC = re.compile(r"\b(contract_data_processor_\w+|process_\w+)\b")

# Each file and the test that checks it: a file added without a check fails the first test.
CHECKED = {
    "Dockerfile": "test_the_dockerfile_is_hadolint_clean, test_the_image_builds_as_its_steps_say",
    "Dockerfile.dockerignore": "test_the_image_builds_as_its_steps_say",
    "k8s/deployment-postgres.yaml": "test_kubernetes_manifests",
    "k8s/job-backfill.yaml": "test_kubernetes_manifests",
    "k8s/pdb.yaml": "test_kubernetes_manifests",
    "k8s/secret.yaml": "test_kubernetes_manifests",
    "k8s/service.yaml": "test_kubernetes_manifests",
    "k8s/statefulset-files.yaml": "test_kubernetes_manifests",
    "prometheus/prometheus.yml": "test_promtool_checks_config_and_rules",
    "prometheus/alerts.yml": "test_promtool_checks_config_and_rules, test_dashboard_and_alerts_on_a_live_run",
    "prometheus/alerts_test.yml": "test_every_alert_fires_and_holds_in_its_unit_tests",
    "grafana/cdp-dashboard.json": "test_the_dashboard_is_importable, test_dashboard_and_alerts_on_a_live_run",
    "grafana/provisioning/datasources/prometheus.yml": "test_compose_file",
    "grafana/provisioning/dashboards/cdp.yml": "test_compose_file",
    "compose.yaml": "test_compose_file",
}


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}:/usr/bin:/usr/local/bin")
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]'; Debian's prometheus package for promtool)")
    return found


def _run(*cmd: str, cwd: Path = DEPLOY, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_file_under_deploy_is_checked() -> None:
    files = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    assert files == set(CHECKED)


# -- the image --------------------------------------------------------------------------------------


def test_the_dockerfile_is_hadolint_clean() -> None:
    done = _run(_tool("hadolint"), "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        op, _, rest = line.strip().partition(" ")
        if op == "FROM" and stages[-1] and any(o == "FROM" for o, _ in stages[-1]):
            stages.append([])
        stages[-1].append((op, rest.strip()))
    return stages


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in _stages()[0] if op == "ARG" and "=" in a)


def test_the_runtime_stage_is_slim_non_root_and_stops_gracefully() -> None:
    build, runtime = _stages()
    assert any("gcc" in a for op, a in build if op == "RUN")
    assert not any(re.search(r"apt-get|gcc|build-essential", a) for op, a in runtime if op == "RUN")
    user = dict(runtime)["USER"]
    assert user.split(":")[0].isdigit()
    assert int(user.split(":")[0]) != 0
    assert dict(runtime)["STOPSIGNAL"] == "SIGTERM"
    assert {"8089", "8815"} <= set(dict(runtime)["EXPOSE"].split())
    assert "/data" in dict(runtime)["VOLUME"]
    grace = float(re.search(r"SHUTDOWN_GRACE_S=(\d+)", dict(runtime)["ENV"])[1])  # type: ignore[index]
    for doc in (d for f in (DEPLOY / "k8s").glob("*.yaml") for d in _docs(f)):
        pod = _pod(doc)
        if pod is not None and doc["kind"] != "Job":
            assert pod["terminationGracePeriodSeconds"] > grace, doc["metadata"]["name"]
    stop = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["cdp"]["stop_grace_period"]
    assert float(stop.removesuffix("s")) > grace


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Whether the .dockerignore beside the Dockerfile leaves ``rel`` out of the build context."""
    out = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if (
            fnmatch(rel, pattern)
            or fnmatch(rel, pattern.removeprefix("**/"))
            or (pattern.endswith("/**") and rel.startswith(pattern[:-2]))
        ):
            out = not keep
    return out


def test_the_image_builds_as_its_steps_say(tmp_path: Path) -> None:
    """No Docker daemon here: the build stage's COPY and `pip wheel` run in a copy of the context the
    .dockerignore leaves (no compiled leftovers), the runtime stage's venv install from those wheels
    alone, and the result runs its default job; the XDR walker was compiled by the build."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if subprocess.run([*shlex.split(compiler), "--version"], capture_output=True).returncode != 0:
        pytest.skip(f"no working C compiler here (CC={compiler}): the image's build stage has one, this copy would not")
    patterns = [p for p in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if p and p[0] != "#"]
    context = tmp_path / "context"
    for path in ROOT.rglob("*"):
        rel = str(path.relative_to(ROOT))
        if path.is_file() and not rel.startswith((".venv", ".git/")) and not _ignored(rel, patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    assert not list(context.rglob("*.so"))
    assert (context / "cdp" / "xdr" / "_cskip.c").is_file()
    build, runtime = _stages()
    src, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    src.mkdir()
    for op, arg in build:
        if op == "COPY":
            *sources, dest = arg.split()
            target = src / dest.removeprefix("./") if dest not in ("./", ".") else src
            for name in sources:
                item = context / name
                shutil.copytree(item, target, dirs_exist_ok=True) if item.is_dir() else shutil.copy2(item, src)
    paths = {"/wheels": str(wheels), "/opt/cdp": str(venv), "${EXTRAS}": _args()["EXTRAS"]}

    def shell(command: str, cwd: Path) -> None:
        for old, new in paths.items():
            command = command.replace(old, new)
        command = re.sub(r"^pip ", f"{shlex.quote(sys.executable)} -m pip ", command)
        command = command.replace("python -m venv", f"{shlex.quote(sys.executable)} -m venv --without-pip")
        done = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

    (wheel_run,) = [a for op, a in build if op == "RUN" and "pip wheel" in a]
    shell(wheel_run, src)
    (install_run,) = [a for op, a in runtime if op == "RUN" and "venv" in a]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    shell(install_run.replace(f"{venv}/bin/pip", f"{venv}/bin/python -m pip"), tmp_path)
    version = subprocess.run([venv / "bin" / "cdp", "--version"], capture_output=True, text=True, check=True)
    assert "XDR walker: compiled" in version.stdout
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HEALTH_HOST": "127.0.0.1",
           "HEALTH_PORT": "0"}  # fmt: skip
    ran = subprocess.run([venv / "bin" / "cdp", "demo", "--ledgers", "3"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert [json.loads(line)["ledger_sequence"] for line in ran.stdout.splitlines()]


# -- Kubernetes -------------------------------------------------------------------------------------


def _pod(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def test_kubernetes_manifests() -> None:
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    done = _run(_tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files))
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {}
    for doc in (d for f in files for d in _docs(f)):
        kinds[doc["kind"]] = doc
        pod = _pod(doc)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["capabilities"]["drop"]) == (
                True, False, ["ALL"])  # fmt: skip
            assert "memory" in container["resources"]["limits"]
            if doc["kind"] != "Job":  # long-running: probes that mean what Kubernetes means
                assert container["livenessProbe"]["httpGet"]["path"] == "/live"
                assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert kinds["StatefulSet"]["spec"]["replicas"] == 1  # the output's lock admits one writer
    assert kinds["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # the database's lock, likewise
    rule = kinds["Job"]["spec"]["podFailurePolicy"]["rules"][0]
    assert (rule["action"], rule["onExitCodes"]["values"]) == ("FailJob", [2])  # a configuration error
    assert {"PodDisruptionBudget", "Service", "Secret"} <= set(kinds)


# -- Prometheus -------------------------------------------------------------------------------------


def test_promtool_checks_config_and_rules() -> None:
    promtool = _tool("promtool")
    for args in (("check", "config", "prometheus/prometheus.yml"), ("check", "rules", "prometheus/alerts.yml")):
        done = _run(promtool, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_and_holds_in_its_unit_tests() -> None:
    done = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in _docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"] for r in g["rules"]}
    fired, quiet = set(), set()
    for case in _docs(DEPLOY / "prometheus" / "alerts_test.yml")[0]["tests"]:
        instances = {re.search(r'instance="([^"]+)"', s["series"])[1] for s in case["input_series"]}  # type: ignore[index]
        for check in case["alert_rule_test"]:
            got = {a["exp_labels"]["instance"] for a in check["exp_alerts"]}
            (fired if got else quiet).add(check["alertname"])
            if instances - got:  # an instance in the same data that must not fire
                quiet.add(check["alertname"])
    assert alerts == fired == quiet


# -- Grafana ----------------------------------------------------------------------------------------


def _panel_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "cdp-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_is_importable() -> None:
    """What Grafana's import needs: a uid, a title, panels placed on the grid with Prometheus targets, and
    the data source as a variable (no hard-coded uid to edit); every panel of the issue's list is there."""
    dashboard = json.loads((DEPLOY / "grafana" / "cdp-dashboard.json").read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" and t["expr"] for t in panel["targets"])
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "commit time", "queue", "bytes held", "breaker", "reconnects", "errors",
                  "dead-lettered", "flight", "sink", "memory"):  # fmt: skip
        assert topic in titles, topic


def test_compose_file() -> None:
    done = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (DEPLOY / host).exists(), host
    assert compose["services"]["cdp"]["environment"]["SOURCE_ENDPOINT"].startswith("fake-source:")
    datasource = _docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = _docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "cdp.yml")[0]
    mounted = [v for v in compose["services"]["grafana"]["volumes"] if "cdp-dashboard.json" in v][0]
    assert mounted.split(":")[1].startswith(provider["providers"][0]["options"]["path"])


# -- a live run -------------------------------------------------------------------------------------


class _Scrapes:
    """A proxy in front of cdp's /metrics that counts Prometheus's scrapes, so the test waits for them
    instead of for time."""

    def __init__(self, upstream: str) -> None:
        self.count = 0
        self.changed = threading.Condition()
        scrapes = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with urllib.request.urlopen(upstream + self.path, timeout=10) as answer:
                    body = answer.read()
                    kind = answer.headers["Content-Type"]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with scrapes.changed:
                    scrapes.count += 1
                    scrapes.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def wait(self, count: int, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout), f"{self.count} scrapes"


@contextmanager
def _proc(cmd: list[str], ready: re.Pattern[str], **kw: Any) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """A process whose stderr says it is ready (matching ``ready``); killed on the way out."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, **kw)
    assert proc.stderr is not None
    drain: threading.Thread | None = None
    try:
        match, drain = read_until_ready(proc.stderr, ready.search, cmd[0])
        yield proc, match
    finally:
        proc.kill()
        proc.wait()
        if drain is not None:
            drain.join()
        proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _live_cdp(dsn: str) -> Iterator[str]:
    """`cdp run` from a fake upstream into PostgreSQL with Flight on: its HTTP base URL, once it serves."""
    with fake_source_process("--rate", "20") as fake:
        env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{fake.port}", "OUTPUT": dsn, "HEALTH_HOST": "127.0.0.1",
               "HEALTH_PORT": "0", "FLIGHT_PORT": "0", "FLIGHT_HOST": "127.0.0.1", "WORKER_MODE": "thread"}  # fmt: skip
        started = re.compile(r"service started .*http_port=(\d+)")
        with _proc([*CDP, "run"], started, cwd=ROOT, env=env) as (_, match):
            yield f"http://127.0.0.1:{match[1]}"


@contextmanager
def _prometheus(tmp_path: Path, target: str) -> Iterator[int]:
    """A real Prometheus scraping ``target`` every second with the alerting rules loaded: its port."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "cdp", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    cmd = [_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
           f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'data'}"]  # fmt: skip
    with _proc(cmd, re.compile("Server is ready to receive web requests")):
        yield port


def test_dashboard_and_alerts_on_a_live_run(postgres: PostgresServer, tmp_path: Path) -> None:
    """A real Prometheus scrapes a real `cdp run` (fake upstream, PostgreSQL, Flight): every panel's
    expression returns data, every alert's is valid, and every metric either names is in /metrics."""
    _tool("prometheus")
    rules = [r for g in _docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"] for r in g["rules"]]
    with _live_cdp(postgres.create_database("deploy")) as target:
        scrapes = _Scrapes(target)
        threading.Thread(target=scrapes.server.serve_forever, daemon=True).start()
        try:
            with _prometheus(tmp_path, scrapes.address) as port:
                scrapes.wait(6)  # the 6th scrape's start means the 5th's samples are stored
                with urllib.request.urlopen(target + "/metrics", timeout=10) as answer:
                    exposed = answer.read().decode()
                results = {e: _query(port, e) for e in _panel_exprs()}
                for rule in rules:  # valid PromQL over these series (firing or not)
                    _query(port, rule["expr"])
        finally:
            scrapes.server.shutdown()
            scrapes.server.server_close()
    empty = [e for e, r in results.items() if not r]
    assert not empty, f"panels with no data: {empty}"
    named = {m for e in [*_panel_exprs(), *(r["expr"] for r in rules)] for m in METRIC.findall(e)}
    missing = {m for m in named if not re.search(rf"^{m}[{{ ]", exposed, re.MULTILINE)}
    assert not missing, f"named but not exposed: {missing}"


def _query(port: int, expr: str) -> list[Any]:
    """The result of ``expr`` now (Grafana's variables given their all-values); an error fails the test."""
    expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".+")
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])
