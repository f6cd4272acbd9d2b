"""deploy/kubernetes: what `kubectl apply -k` would send to a cluster, checked offline.

Each kustomization (the base, each overlay, and every component at once) is rendered with `kubectl kustomize`, then
every object is checked against the Kubernetes API's own schemas (kubernetes-validate, strict: an unknown field
fails), scanned by checkov (no failed check; every check skipped in a manifest says why, and docs/kubernetes.md
lists it), and read beside the service's settings (captcha_api/service/config.py), gunicorn.conf.py and
deploy/Dockerfile, so that a renamed setting, a moved port or another worker count breaks a test here. Last, the
pod is run as the cluster would run it: its settings, its user, a read-only root with only its volumes writable.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import runpy
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from captcha_api.service.config import PREFIX, Settings, load_settings
from scripts.process import free_port

from .conftest import ROOT, encode
from .servers import REDIS, Redis

KUBE = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "kubernetes.md"
KUSTOMIZATIONS = ("base", "overlays/model-volume", "overlays/prometheus-operator")
COMPONENTS = ("components/model-volume", "components/service-monitor")
# Manifests applied on their own (kubectl apply -f), outside any kustomization.
STANDALONE = (KUBE / "components" / "model-volume" / "model-loader.yaml",)
# The oldest Kubernetes the manifests are meant for (autoscaling/v2 and policy/v1 are older still) and the newest
# whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
# Objects of the Prometheus Operator's custom resources, whose schemas Kubernetes does not have.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
KEY = "kubernetes-test-key-" + secrets.token_hex(8)

# The figures the resources are sized from (docs/kubernetes.md, "Sizing": python -m scripts.bench and the
# measurements beside it, on a 2-core machine), in MiB.
MASTER_MIB = 64  # the gunicorn master's RSS
WORKER_MIB = 138  # a worker's peak RSS after the benchmark's 12,396 requests
LARGEST_WORKER_MIB = 182  # a worker's peak RSS after the largest batch the settings allow
DECODE_MIB = 61  # what decoding the largest batch adds to a worker beyond its body
REQUESTS_PER_CORE = 155  # /predict requests a second per core of the workers, limits counted in Redis


# ---------------------------------------------------------------- tools


def tool(name: str, hint: str) -> str:
    """The tool's path; a skip without it, a failure in CI (where `make install` provides it)."""
    path = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{ROOT / '.venv-kube' / 'bin'}")
    path = path or shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} must be installed in CI ({hint})", pytrace=False)
    pytest.skip(f"{name} not installed ({hint})")


def render(directory: Path) -> list[dict]:
    kubectl = tool("kubectl", "kubectl 1.21+ renders kustomizations: kubectl kustomize")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Every kustomization rendered, and one more with every component at once (they must compose)."""
    together = tmp_path_factory.mktemp("all-components")
    up = Path(os.path.relpath(KUBE, together))  # kustomize takes relative paths only
    (together / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "captcha-ocr",
                "resources": [str(up / "base")],
                "components": [str(up / component) for component in COMPONENTS],
            }
        )
    )
    renders = {name: render(KUBE / name) for name in KUSTOMIZATIONS}
    renders["all components"] = render(together)
    return renders


def standalone() -> list[dict]:
    return [doc for path in STANDALONE for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def api_deployment(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "captcha-ocr")


def pod_labels(objects: list[dict]) -> dict:
    return api_deployment(objects)["spec"]["template"]["metadata"]["labels"]


def api_container(objects: list[dict]) -> dict:
    containers = api_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "api")


# ---------------------------------------------------------------- schemas and the security check


def test_every_object_is_valid_for_the_kubernetes_api(rendered):
    import kubernetes_validate

    checked = 0
    objects = [(name, o) for name, objs in rendered.items() for o in objs] + [("standalone", o) for o in standalone()]
    for source, obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue  # checked against the objects it names, below
        assert obj.get("metadata", {}).get("namespace") or obj["kind"] == "Namespace", (source, obj["kind"])
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']} on {version}: {error.message}")
            checked += 1
    assert checked >= 2 * 40


def test_the_schema_check_refuses_a_misspelt_field(rendered):
    """Strict validation is on: a field Kubernetes does not know (which kubectl would drop in silence) fails."""
    import kubernetes_validate

    deployment = json.loads(json.dumps(api_deployment(rendered["base"])))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_service_monitor_names_the_metrics_listener(rendered):
    objects = rendered["overlays/prometheus-operator"]
    custom = {(o["apiVersion"], o["kind"]) for o in objects} - {(o["apiVersion"], o["kind"]) for o in rendered["base"]}
    assert custom - {("v1", "Service")} == CUSTOM_KINDS
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "captcha-ocr-metrics")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "captcha-ocr"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert endpoint["path"] == "/metrics" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels(objects).items()
    metrics = next(p for p in api_container(objects)["ports"] if p["name"] == port["targetPort"])
    assert metrics["containerPort"] == port["port"]


def checkov_results(paths: list[Path]) -> list[dict]:
    checkov = tool("checkov", "make install puts it in .venv-kube")
    # --skip-download: nothing is fetched (no severities, guidelines or policies from Prisma Cloud); offline.
    command = [checkov, "--framework", "kubernetes", "--output", "json", "--skip-download"]
    for path in paths:
        command += ["--file", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=paths[0].parent)
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_finds_nothing_that_is_not_explained(rendered, tmp_path):
    paths = []
    for name, objects in rendered.items():
        path = tmp_path / (name.replace("/", "-").replace(" ", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(objects))
        paths.append(path)
    paths += [shutil.copy(path, tmp_path / path.name) for path in STANDALONE]
    reports = checkov_results([Path(p) for p in paths])
    results = [r["results"] for r in reports if r.get("check_type") == "kubernetes"]
    assert results, reports
    assert not [e for r in results for e in r["parsing_errors"]], results
    failed = [c for r in results for c in r["failed_checks"]]
    assert not failed, "\n".join(f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in failed)
    passed = sum(len(r["passed_checks"]) for r in results)
    assert passed > 300
    docs = DOCS.read_text()
    skipped = [c for r in results for c in r["skipped_checks"]]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"
        assert check["check_id"] in docs, f"docs/kubernetes.md does not explain {check['check_id']}"


# ---------------------------------------------------------------- in step with the service


def pod_environment(objects: list[dict], **paths: Path) -> dict[str, str]:
    """The API container's variables as the kubelet sets them: the ConfigMap's, then its own (the Secret's key is
    this test's). `paths` maps a folder of the pod (/models) to one here, for the settings that check a path."""
    container = api_container(objects)
    environment = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        environment.update(one(objects, "ConfigMap", name)["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("captcha-ocr-api-keys", "api-keys")
            environment[variable["name"]] = KEY
    for inside, here in paths.items():
        environment = {k: str(here) + v[len(inside) :] if v.startswith(inside) else v for k, v in environment.items()}
    return environment


def gunicorn_config(environment: dict[str, str], monkeypatch) -> dict:
    """gunicorn.conf.py as gunicorn reads it in the pod (it reads CAPTCHA_* from the environment)."""
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def dockerfile_user_id() -> int:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    return int(re.search(r"useradd\b[^\n]*--uid (\d+)", text).group(1))


def quantity(value) -> float:
    """A Kubernetes quantity in cores ("2", "500m") or MiB ("896Mi", "1Gi")."""
    text = str(value)
    for suffix, factor in (("m", 1e-3), ("Ki", 1 / 1024), ("Mi", 1), ("Gi", 1024)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "all components"])
def test_the_settings_are_the_services_and_agree_with_gunicorn(name, rendered, monkeypatch):
    objects = rendered[name]
    environment = pod_environment(objects, **{"/models": ROOT / "model"})
    # Every CAPTCHA_* name is a setting of config.py (a renamed one fails here); the one other variable is
    # prometheus_client's, documented in docs/configuration.md.
    unknown = [v for v in environment if v.startswith(PREFIX) and v[len(PREFIX) :].lower() not in Settings.model_fields]
    assert not unknown, f"not settings of captcha_api/service/config.py: {unknown}"
    assert {v for v in environment if not v.startswith(PREFIX)} == {"PROMETHEUS_MULTIPROC_DIR"}
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    assert "CAPTCHA_API_KEYS" not in configmap["data"], "the keys come from the Secret"
    assert not [o for o in objects if o["kind"] == "Secret"], "no key is committed: the Secret is made by hand"
    settings = load_settings(environment)  # valid as a whole, as the pod's master checks them
    config = gunicorn_config(environment, monkeypatch)

    container = api_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.port, "metrics": settings.metrics_port}
    assert config["bind"] == [f"{settings.host}:{settings.port}", f"{settings.host}:{settings.metrics_port}"]
    assert settings.host == "0.0.0.0" and config["workers"] == settings.workers

    # Probes: /health on the API's port, which needs no key.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
        assert container[probe]["timeoutSeconds"] < settings.timeout
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30

    # Metrics: scraped per pod on the metrics listener, without a key (an annotation scrape cannot send one).
    annotations = api_deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == settings.metrics_port and settings.metrics == "open"

    # The Service sends its port to the API's, never to the metrics listener.
    service = one(objects, "Service", "captcha-ocr")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"].items() <= pod_labels(objects).items()

    # Stopping: preStop keeps the pod answering while it leaves the endpoints, then gunicorn's graceful timeout,
    # all within the grace period.
    spec = api_deployment(objects)["spec"]["template"]["spec"]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    assert config["graceful_timeout"] == settings.graceful_timeout
    assert spec["terminationGracePeriodSeconds"] >= int(sleep[1]) + settings.graceful_timeout + 5
    strategy = api_deployment(objects)["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0 and strategy["rollingUpdate"]["maxSurge"] >= 1

    # Resources from the measured figures: a core per worker; memory for the master and every worker at its cap
    # with one more of the largest requests (gunicorn checks the cap after each request).
    resources = container["resources"]
    cores = settings.workers * settings.threads
    assert quantity(resources["requests"]["cpu"]) == quantity(resources["limits"]["cpu"]) == cores
    keep = settings.feedback_keep_mb
    assert quantity(resources["requests"]["memory"]) >= MASTER_MIB + settings.workers * WORKER_MIB + keep
    assert settings.max_worker_rss_mb >= LARGEST_WORKER_MIB * 1.25, "the cap would recycle a healthy worker"
    worst = settings.max_worker_rss_mb + settings.max_buffered_bytes / 2**20 + DECODE_MIB
    assert quantity(resources["limits"]["memory"]) >= MASTER_MIB + settings.workers * worst + keep

    # The HPA scales this Deployment on CPU, never below two pods; the budget lets one go at a time.
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "captcha-ocr"}
    assert hpa["spec"]["minReplicas"] >= 2 and "replicas" not in api_deployment(objects)["spec"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] < 100
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == api_deployment(objects)["spec"]["selector"]["matchLabels"]

    # Redis: the limits' storage is the Redis Service, and so the tasks' store (not SQLite on a read-only root).
    uri = urlsplit(settings.ratelimit_storage_uri)
    redis_service = one(objects, "Service", uri.hostname)
    assert [p["port"] for p in redis_service["spec"]["ports"]] == [uri.port]
    assert settings.task_store_location == settings.ratelimit_storage_uri

    # Non-root on a read-only root, as the image's user; what the service writes is on the pod's volumes.
    security = spec["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == dockerfile_user_id()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}

    def volume(path: str) -> dict:
        found = [mount for mount in mounts if path == mount or path.startswith(mount + "/")]
        assert found, f"{path} is on the read-only root"
        return volumes[mounts[max(found, key=len)]]

    assert volume("/tmp")["emptyDir"]["medium"] == "Memory"  # gunicorn's heartbeats
    assert volume("/dev/shm")["emptyDir"]["medium"] == "Memory"  # the recent readings (feedback.py)
    assert quantity(volume("/dev/shm")["emptyDir"]["sizeLimit"]) >= 2 * keep
    assert Path(settings.feedback_dir).is_absolute()
    feedback = volume(settings.feedback_dir)
    if "emptyDir" in feedback:
        assert quantity(feedback["emptyDir"]["sizeLimit"]) >= settings.feedback_max_mb
    volume(environment["PROMETHEUS_MULTIPROC_DIR"])
    if "CAPTCHA_MODEL" in environment:
        # The model-volume component: the models' claim, mounted read-only where the settings look.
        models = volume(pod_environment(objects)["CAPTCHA_MODEL_DIR"])
        assert models["persistentVolumeClaim"]["readOnly"] is True
        claim = one(objects, "PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"])
        assert set(claim["spec"]["accessModes"]) & {"ReadOnlyMany", "ReadWriteMany"}


def test_the_image_serves_the_shipped_models_from_where_the_base_expects_them(rendered):
    """The base takes the models from the image (deploy/Dockerfile copies model/ to /app/model): CAPTCHA_MODEL is
    left to its default, the shipped model beside the package."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /app$", text, re.M) and re.search(r"^COPY model/ \./model/$", text, re.M)
    assert "CAPTCHA_MODEL=" not in (KUBE / "base" / "captcha.env").read_text()
    env = dict(re.findall(r"(CAPTCHA_\w+)=(\S+)", text))
    assert env["CAPTCHA_PORT"] == str(load_settings(pod_environment(rendered["base"])).port)


def test_the_autoscaler_target_and_limits_follow_the_measured_throughput(rendered):
    """hpa.yaml's figures: requests a second a pod takes before the HPA adds one, and the largest fleet one Redis
    serves (0.31 ms of its one core per request)."""
    objects = rendered["base"]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    cores = quantity(api_container(objects)["resources"]["requests"]["cpu"])
    target = hpa["metrics"][0]["resource"]["target"]["averageUtilization"] / 100
    per_pod = cores * REQUESTS_PER_CORE * target
    assert round(per_pod) == 186
    redis_capacity = 1 / 0.31e-3
    assert hpa["maxReplicas"] * cores * REQUESTS_PER_CORE <= redis_capacity
    redis = one(objects, "Deployment", "captcha-ocr-redis")["spec"]["template"]["spec"]["containers"][0]
    assert quantity(redis["resources"]["requests"]["cpu"]) >= hpa["maxReplicas"] * per_pod * 0.31e-3
    assert quantity(redis["resources"]["limits"]["cpu"]) == 1
    maxmemory = int(redis["args"][redis["args"].index("--maxmemory") + 1].removesuffix("mb"))
    assert quantity(redis["resources"]["limits"]["memory"]) >= 1.5 * maxmemory


def test_the_docs_name_every_resource_and_figure(rendered):
    docs = DOCS.read_text()
    for obj in [o for objects in rendered.values() for o in objects] + standalone():
        name = re.sub(r"-[a-z0-9]{10}$", "", obj["metadata"]["name"]) if obj["kind"] == "ConfigMap" else None
        assert f"{obj['kind']} `{name or obj['metadata']['name']}`" in docs, obj["kind"] + " " + obj["metadata"]["name"]
    for figure in (MASTER_MIB, WORKER_MIB, LARGEST_WORKER_MIB, DECODE_MIB, REQUESTS_PER_CORE):
        assert re.search(rf"\b{figure}\b", docs), figure


# ---------------------------------------------------------------- the pod, run as the cluster runs it

POD_SHELL = """
set -eu
mount --make-rprivate /
# The interpreter where the pod's user reaches it, as the image has it in /usr/local: on a machine that keeps it in
# a folder of root's alone (pyenv in /root), that folder is replaced, in this namespace only, by a readable one
# holding just the interpreter's prefix.
if [ -n "$SEALED" ]; then
    mkdir -p "$PREFIX_KEPT"
    mount --bind "$SEALED/$PREFIX_INSIDE" "$PREFIX_KEPT"
    mount -t tmpfs -o size=1m,mode=755 tmpfs "$SEALED"
    mkdir -p "$SEALED/$PREFIX_INSIDE"
    mount --bind "$PREFIX_KEPT" "$SEALED/$PREFIX_INSIDE"
fi
# The root read-only, as readOnlyRootFilesystem makes it: every mount but the kernel's own.
for target in $(awk '$2 !~ "^/(proc|sys|dev)(/|$)" {print $2}' /proc/self/mounts | sort -u); do
    mount -o remount,bind,ro "$target" 2>/dev/null || mount --bind -o ro "$target" "$target"
done
# Then the pod's volumes, writable (emptyDir), each its sizeLimit.
while read -r target size; do mount -t tmpfs -o "size=$size,mode=1777" tmpfs "$target"; done <<VOLUMES
$VOLUMES
VOLUMES
exec setpriv --reuid="$POD_UID" --regid="$POD_GID" --clear-groups -- "$@"
"""


@pytest.fixture
def pod(rendered, tmp_path):
    """gunicorn as the API container runs it: its environment (the ports free ones on loopback, Redis one started
    here), the image's user, the root read-only and only its volumes writable (each a folder here standing for the
    pod's path; /dev/shm is the service's fixed path, so the real one, in a mount namespace of the test's own)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        if os.environ.get("CI"):
            pytest.fail("the pod test runs as root with unshare and setpriv (util-linux) in CI", pytrace=False)
        pytest.skip("needs root, unshare and setpriv (a mount namespace with a read-only root)")
    if not REDIS:
        if os.environ.get("CI"):
            pytest.fail("redis-server must be installed in CI (apt-get install redis-server)", pytrace=False)
        pytest.skip("redis-server not installed (Debian: apt-get install redis-server)")
    objects = rendered["base"]
    container = api_container(objects)
    spec = api_deployment(objects)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    # A folder the pod's user can walk to (pytest's own are root's alone) holds a stand-in for each volume.
    stand_in = Path(tempfile.mkdtemp(prefix="captcha-pod-"))
    stand_in.chmod(0o755)
    targets = []
    for mount in container["volumeMounts"]:
        size = volumes[mount["name"]]["emptyDir"]["sizeLimit"].replace("Mi", "m")
        here = Path(mount["mountPath"]) if mount["mountPath"] == "/dev/shm" else stand_in / mount["mountPath"][1:]
        here.mkdir(parents=True, exist_ok=True)
        targets.append((mount["mountPath"], here, size))
    redis = Redis(tmp_path).start()
    environment = pod_environment(objects, **{p: h for p, h, _ in targets if p != "/dev/shm"})
    port, metrics_port = free_port(), free_port()
    environment.update(
        CAPTCHA_HOST="127.0.0.1",
        CAPTCHA_PORT=str(port),
        CAPTCHA_METRICS_PORT=str(metrics_port),
        CAPTCHA_RATELIMIT_STORAGE_URI=f"{redis.uri}/0",
        TMPDIR=str(stand_in / "tmp"),
    )
    security = spec["securityContext"]
    prefix = Path(sys.base_prefix).resolve()
    sealed = next((p for p in reversed(prefix.parents) if p != Path("/") and not p.stat().st_mode & 0o001), None)
    shell_env = {
        "PATH": os.environ["PATH"],
        "SEALED": str(sealed or ""),
        "PREFIX_INSIDE": str(prefix.relative_to(sealed)) if sealed else "",
        "PREFIX_KEPT": str(stand_in / "interpreter"),
        "VOLUMES": "\n".join(f"{here} {size}" for _, here, size in targets),
        "POD_UID": str(security["runAsUser"]),
        "POD_GID": str(security["runAsGroup"]),
        **environment,
    }
    log = open(tmp_path / "pod.log", "w")
    started = time.monotonic()
    process = subprocess.Popen(
        ["unshare", "--mount", "--", "sh", "-c", POD_SHELL, "pod", sys.executable, "-m", "gunicorn", "-c"]
        + ["gunicorn.conf.py"],
        cwd=ROOT,
        env=shell_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert process.poll() is None, (tmp_path / "pod.log").read_text()[-3000:]
            assert time.monotonic() - started < 60, "not ready after 60 s"
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        yield {
            "url": url,
            "metrics": f"http://127.0.0.1:{metrics_port}",
            "process": process,
            "log": tmp_path / "pod.log",
            "ready_s": time.monotonic() - started,
            "settings": load_settings(environment),
            "grace": spec["terminationGracePeriodSeconds"],
            "prestop": int(container["lifecycle"]["preStop"]["exec"]["command"][1]),
        }
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
        redis.stop()
        shutil.rmtree(stand_in, ignore_errors=True)


@pytest.mark.integration
def test_the_pod_serves_on_a_read_only_root_and_stops_within_its_grace_period(pod, captcha_image):
    image = encode(captcha_image, "PNG")
    headers = {"X-API-Key": KEY}
    url = pod["url"]
    assert pod["ready_s"] < 30
    answer = requests.post(url + "/predict", files={"image": ("c.png", image)}, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    # A report: the recent reading found in /dev/shm, the image stored on the feedback volume.
    request_id = answer.headers["X-Request-ID"]
    wrong = answer.json()["prediction"][::-1]  # in the model's alphabet
    report = requests.post(url + "/report", json={"request_id": request_id, "text": wrong}, headers=headers)
    assert report.status_code == 200 and report.json()["stored"], report.text
    # A compatible API's task, kept in Redis.
    created = requests.post(
        url + "/createTask",
        json={"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": base64.b64encode(image).decode()}},
        timeout=30,
    ).json()
    assert created["errorId"] == 0, created
    result = requests.post(url + "/getTaskResult", json={"clientKey": KEY, "taskId": created["taskId"]}).json()
    assert result["status"] == "ready" and result["solution"]["text"] == answer.json()["prediction"]
    # Metrics on their own listener, without a key; not on the API's port.
    metrics = requests.get(pod["metrics"] + "/metrics", timeout=10)
    assert metrics.status_code == 200 and 'captcha_requests_total{method="POST",route="/predict"' in metrics.text
    assert requests.get(url + "/metrics", headers=headers, timeout=10).status_code == 404

    # The stop, as a rollout or a scale-down makes it. The pod leaves the Service's endpoints (so no new connection
    # reaches it) and preStop sleeps while the connections clients already hold keep sending requests (kube-proxy
    # keeps an established connection where it goes); then SIGTERM. Every request sent must be answered; a client
    # leaves when the pod closes its connection (then the Service would send its next request to another pod).
    body = json.dumps({"image": base64.b64encode(image).decode()})
    results, lock, left_endpoints, signalled = [], threading.Lock(), threading.Event(), threading.Event()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(url).port, timeout=30)
        while True:
            connection.auto_open = not left_endpoints.is_set()  # no new connection to a pod out of the endpoints
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json", **headers})
                answer = connection.getresponse()
                answer.read()
                outcome = (answer.status, signalled.is_set())
            except http.client.NotConnected:
                return  # closed by the pod: the client moves on
            except (OSError, http.client.HTTPException) as error:
                outcome = (repr(error), signalled.is_set())
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    left_endpoints.set()
    time.sleep(0.5)  # preStop, shortened: what matters is that connections are still in use when SIGTERM comes
    signalled.set()
    stop_at = time.monotonic()
    os.kill(pod["process"].pid, signal.SIGTERM)
    for thread in threads:
        thread.join(pod["settings"].graceful_timeout)
    pod["process"].wait(pod["grace"] - pod["prestop"])
    stopped_s = time.monotonic() - stop_at
    log = pod["log"].read_text()
    failed = [r for r in results if r[0] != 200]
    after_signal = sum(1 for status, signalled in results if signalled and status == 200)
    assert len(results) > 50 and not failed, (len(results), failed[:5])
    assert not any(thread.is_alive() for thread in threads), "a connection stayed open past the graceful timeout"
    assert pod["process"].returncode == 0 and stopped_s <= pod["settings"].graceful_timeout, stopped_s
    assert "Read-only file system" not in log and "feedback is off" not in log, log[-3000:]
    assert "Permission denied" not in log, log[-3000:]
    print(
        f"ready {pod['ready_s']:.2f} s; {len(results)} requests, {after_signal} answered after SIGTERM, 0 failed; "
        f"gunicorn exited {stopped_s:.2f} s after SIGTERM"
    )
