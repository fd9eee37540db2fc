"""Kubernetes manifests (manifests/): rendered with kustomize, validated offline, and checked to
fit together and with the code they run.

- Every kustomization renders with ``kubectl kustomize`` (skipped only without kubectl).
- Built-in kinds validate strictly (unknown fields rejected) against the Kubernetes JSON schemas
  shipped by ``kubernetes-validate``, for the oldest and the newest Kubernetes we support.
- The InferenceService is read into the KServe SDK's own model classes; every key must be a
  field of its class at every level, and the objects must serialise back to the same dict.
- Names, images, selectors, Secrets, ports and CLI arguments agree across files and with the
  code (the arguments are parsed by the real argparse/click parsers of the commands).
- Alert and dashboard PromQL parses and only uses metrics the server exposes (or
  kube-state-metrics' and Prometheus' own).
- No credentials are committed: rendered Secrets hold placeholders only.

The secretGenerators read git-ignored ``*.env`` files; the tests render a copy of manifests/ in
which every ``*.env`` is made from its committed ``*.env.example`` (a real ``*.env`` in the work
tree is never read).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
KUBECTL = shutil.which("kubectl")

TARGETS = [
    "base",
    "third-party/minio",
    "third-party/redis",
    "monitoring",
    "overlays/local",
    "overlays/production",
]
OVERLAYS = ["overlays/local", "overlays/production"]
LEGACY = "overlays/legacy-check"  # made in the copy: production + components/kserve-legacy-mode
K8S_VERSIONS = ["1.29", "latest"]  # Kubeflow 1.10 supports Kubernetes 1.29 and newer
CUSTOM_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
PROJECT_IMAGE_REPOS = {"ghcr.io/fraudops/fraudops", "dev.local/fraudops"}
PLACEHOLDER = re.compile(r"changeme|example|placeholder|replace[-_]?me", re.IGNORECASE)
S3_KEYS = {
    "S3_ENDPOINT": "serving.kserve.io/s3-endpoint",
    "S3_USE_HTTPS": "serving.kserve.io/s3-usehttps",
    "S3_VERIFY_SSL": "serving.kserve.io/s3-verifyssl",
    "AWS_REGION": "serving.kserve.io/s3-region",
}
DRIFT_ARGS = [
    "--store=s3://fraudops",
    "--retrain=kfp",
    "--kfp-host=http://ml-pipeline.kubeflow.svc.cluster.local:8888",
    "--retrain-data=s3://fraudops/data/latest.parquet",
]


# ---------------------------------------------------------------------------------------------
# rendering


def _kustomize(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of manifests/ with every *.env made from its *.env.example."""
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("*.env"))
    for example in copy.rglob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    legacy = copy / LEGACY
    legacy.mkdir(parents=True)
    (legacy / "kustomization.yaml").write_text(
        "resources: [../production]\ncomponents: [../../components/kserve-legacy-mode]\n"
    )
    return copy


@pytest.fixture(scope="module")
def rendered(tree) -> dict[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: cannot render the kustomizations")
    return {target: _kustomize(tree / target) for target in [*TARGETS, LEGACY]}


def _one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _names(docs, kind) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def _pod_specs(docs) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(owner, pod metadata, pod spec) of every workload, InferenceService predictor included."""
    out = []
    for d in docs:
        owner = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            tpl = d["spec"]["template"]
            out.append((owner, tpl.get("metadata", {}), tpl["spec"]))
        elif d["kind"] == "CronJob":
            tpl = d["spec"]["jobTemplate"]["spec"]["template"]
            out.append((owner, tpl.get("metadata", {}), tpl["spec"]))
        elif d["kind"] == "InferenceService":
            out.append((owner, d["metadata"], d["spec"]["predictor"]))
    return out


def _containers(docs):
    for owner, _, spec in _pod_specs(docs):
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            yield owner, spec, c


@pytest.mark.parametrize("target", TARGETS)
def test_every_kustomization_renders(rendered, target):
    docs = rendered[target]
    assert docs, f"{target} renders nothing"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{target}: duplicate objects"
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= d.keys()


def test_real_env_files_are_git_ignored():
    for example in MANIFESTS.rglob("*.env.example"):
        real = example.with_suffix("")
        proc = subprocess.run(
            ["git", "check-ignore", "-q", str(real.relative_to(ROOT))], cwd=ROOT, check=False
        )
        assert proc.returncode == 0, f"{real.relative_to(ROOT)} would be committed"


# ---------------------------------------------------------------------------------------------
# schemas: built-in kinds (Kubernetes JSON schemas) and the InferenceService (KServe SDK types)


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def _schema_version(version: str) -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version() if version == "latest" else version


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_builtin_kinds_validate_strictly(rendered, target, version):
    import kubernetes_validate

    errors = []
    for d in rendered[target]:
        if not _is_builtin(d["apiVersion"]):
            assert (d["apiVersion"], d["kind"]) in CUSTOM_KINDS, f"unchecked kind {d['kind']}"
            continue
        try:
            kubernetes_validate.validate(d, _schema_version(version), strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{d['kind']}/{d['metadata']['name']} at {where}: {e.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_unknown_fields():
    import kubernetes_validate

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    with pytest.raises(kubernetes_validate.ValidationError, match="dataa"):
        kubernetes_validate.validate(cm, _schema_version("latest"), strict=True)


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


def _sdk_class(name: str):
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    return None


def _to_sdk(value: Any, type_name: str, path: str, errors: list[str]) -> Any:
    """Build KServe/Kubernetes SDK objects from ``value``; record keys no class knows."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return None
        return [_to_sdk(v, type_name[5:-1], f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if type_name.startswith("dict("):
        inner = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name).group(2)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return None
        return {k: _to_sdk(v, inner, f"{path}.{k}", errors) for k, v in value.items()}
    if type_name == "object":
        return value
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name])
        if ok and type_name in ("int", "float"):
            ok = not isinstance(value, bool)
        if not ok:
            errors.append(f"{path}: {value!r} is not {type_name}")
        return value
    cls = _sdk_class(type_name)
    if cls is None:
        errors.append(f"{path}: no SDK class {type_name}")
        return None
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {cls.__name__} mapping")
        return None
    fields = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: not a field of {cls.__name__}")
            continue
        kwargs[fields[key]] = _to_sdk(v, cls.openapi_types[fields[key]], f"{path}.{key}", errors)
    try:
        return cls(**kwargs)  # the SDK's own client-side checks (required fields, enums)
    except (TypeError, ValueError) as e:
        errors.append(f"{path}: {cls.__name__}: {e}")
        return None


def _isvc_errors(isvc: dict[str, Any]) -> list[str]:
    from kserve import ApiClient

    errors: list[str] = []
    obj = _to_sdk(isvc, "V1beta1InferenceService", isvc["metadata"]["name"], errors)
    if not errors:
        back = ApiClient().sanitize_for_serialization(obj)
        if back != isvc:
            errors.append("does not survive a round trip through the KServe SDK types")
    return errors


@pytest.mark.parametrize("target", ["base", *OVERLAYS, LEGACY])
def test_inferenceservice_matches_kserve_sdk_types(rendered, target):
    isvc = _one(rendered[target], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    errors = _isvc_errors(isvc)
    assert not errors, "\n".join(errors)


def test_kserve_type_check_catches_unknown_fields(rendered):
    isvc = _one(rendered["overlays/production"], "InferenceService")
    bad = yaml.safe_load(yaml.safe_dump(isvc))
    bad["spec"]["predictor"]["canaryTrafficPercentage"] = 10
    bad["spec"]["predictor"]["containers"][0]["resource"] = {}
    errors = _isvc_errors(bad)
    assert any("canaryTrafficPercentage: not a field of V1beta1PredictorSpec" in e for e in errors)
    assert any("resource: not a field of V1Container" in e for e in errors)


# ---------------------------------------------------------------------------------------------
# the deployment mode: canaryTrafficPercent needs Knative (formerly "Serverless")


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_inferenceservice_runs_in_knative_mode(rendered, target):
    isvc = _one(rendered[target], "InferenceService")
    mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
    # Explicit: from KServe 0.16 on the default is Standard (RawDeployment), where
    # canaryTrafficPercent is silently ignored.
    assert mode == "Knative", f"{target}: deploymentMode {mode!r}"


def test_legacy_component_uses_the_pre_016_name(rendered):
    isvc = _one(rendered[LEGACY], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


# ---------------------------------------------------------------------------------------------
# consistency inside each overlay


@pytest.mark.parametrize("target", OVERLAYS)
def test_one_project_image_per_overlay_and_pinned_images(rendered, target):
    images = {c["image"] for _, _, c in _containers(rendered[target])}
    project = {i for i in images if i.rpartition(":")[0] in PROJECT_IMAGE_REPOS}
    assert len(project) == 1, f"{target}: project images {sorted(project)}"
    for image in images:
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{image} is not pinned"
        if "minio" in repo:
            assert tag.startswith("RELEASE."), image


@pytest.mark.parametrize("target", [*OVERLAYS, "third-party/minio", "third-party/redis"])
def test_services_select_their_pods(rendered, target):
    docs = rendered[target]
    pods = [
        (m.get("labels", {}), s)
        for _, m, s in _pod_specs(docs)
        if not any(d["kind"] == "InferenceService" and d["spec"]["predictor"] is s for d in docs)
    ]
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        matched = [s for labels, s in pods if selector.items() <= labels.items()]
        assert matched, f"Service {svc['metadata']['name']} selects no pod template"
        port_names = {p.get("name") for s in matched for c in s["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            assert isinstance(target_port, int) or target_port in port_names, port
    for d in docs:
        if d["kind"] == "Deployment":
            selector = d["spec"]["selector"]["matchLabels"]
            assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("target", OVERLAYS)
def test_references_resolve(rendered, target):
    docs = rendered[target]
    secrets, configmaps = _names(docs, "Secret"), _names(docs, "ConfigMap")
    accounts = _names(docs, "ServiceAccount")
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for owner, _, spec in _pod_specs(docs):
        assert spec.get("serviceAccountName", "default") in accounts | {"default"}, owner
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, owner
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in _names(docs, "PersistentVolumeClaim"), owner
    for owner, _, c in _containers(docs):
        refs = [(e.get("secretRef"), "Secret") for e in c.get("envFrom", [])]
        refs += [(e.get("configMapRef"), "ConfigMap") for e in c.get("envFrom", [])]
        refs += [(e.get("valueFrom", {}).get("secretKeyRef"), "Secret") for e in c.get("env", [])]
        for ref, kind in refs:
            if ref is None:
                continue
            if ref["name"] in (secrets if kind == "Secret" else configmaps):
                continue
            # Secrets the user creates by hand (fraudops-alerts) must be optional and documented.
            assert ref.get("optional") is True, f"{owner}: {kind} {ref['name']} does not exist"
            assert f"`{ref['name']}`" in deploy_doc, f"docs/deploy.md must explain {ref['name']}"


@pytest.mark.parametrize("target", OVERLAYS)
def test_inferenceservice_credentials_and_log_sink(rendered, target):
    docs = rendered[target]
    isvc = _one(docs, "InferenceService")
    namespace = isvc["metadata"]["namespace"]
    predictor = isvc["spec"]["predictor"]
    account = _one(docs, "ServiceAccount", predictor["serviceAccountName"])
    listed = {s["name"] for s in account.get("secrets", [])}
    s3 = [
        d
        for d in docs
        if d["kind"] == "Secret"
        and d["metadata"]["name"] in listed
        and "serving.kserve.io/s3-endpoint" in d["metadata"].get("annotations", {})
    ]
    assert len(s3) == 1, "the predictor's ServiceAccount must list one KServe S3 Secret"
    assert set(S3_KEYS.values()) <= s3[0]["metadata"]["annotations"].keys()
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= s3[0]["data"].keys()

    url = urlsplit(predictor["logger"]["url"])
    assert predictor["logger"]["mode"] == "all"
    assert url.scheme == "http" and url.path in ("", "/")
    service, _, rest = url.hostname.partition(".")
    assert rest == f"{namespace}.svc.cluster.local", f"logger URL outside {namespace}"
    ports = [p["port"] for p in _one(docs, "Service", service)["spec"]["ports"]]
    assert (url.port or 80) in ports


@pytest.mark.parametrize("target", OVERLAYS)
def test_s3_settings_agree_for_kserve_and_for_our_workloads(rendered, target):
    docs = rendered[target]
    config = _one(docs, "ConfigMap", "fraudops-s3-config")["data"]
    annotations = _one(docs, "Secret", "fraudops-s3")["metadata"]["annotations"]
    for key, annotation in S3_KEYS.items():
        assert config[key] == annotations[annotation], f"{key} != {annotation}"
    assert "://" not in config["S3_ENDPOINT"], "host:port, the scheme comes from S3_USE_HTTPS"
    for owner, _, c in _containers(docs):
        if c["image"].rpartition(":")[0] in PROJECT_IMAGE_REPOS and owner.split("/")[0] in (
            "Deployment",
            "CronJob",
        ):
            names = {e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])}
            names |= {e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])}
            assert {"fraudops-s3-config", "fraudops-s3"} <= names, owner


def test_local_overlay_uses_its_minio(rendered):
    docs = rendered["overlays/local"]
    config = _one(docs, "ConfigMap", "fraudops-s3-config")["data"]
    minio = _one(docs, "Service", "minio")
    api = next(p["port"] for p in minio["spec"]["ports"] if p["name"] == "api")
    ns = minio["metadata"]["namespace"]
    assert config["S3_ENDPOINT"] == f"minio.{ns}.svc.cluster.local:{api}"
    assert config["S3_USE_HTTPS"] == "0"
    setup = _one(docs, "Job", "minio-setup")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in setup["env"]}
    assert env["MINIO_HOST"] == f"minio:{api}" and env["BUCKET"] == "fraudops"
    assert {e["secretRef"]["name"] for e in setup["envFrom"]} == {"minio-root", "fraudops-s3"}
    console = next(p["port"] for p in minio["spec"]["ports"] if p["name"] == "console")
    assert (api, console) == (9000, 9001)


def test_local_overlay_shares_the_online_state_in_its_redis(rendered):
    docs = rendered["overlays/local"]
    service = _one(docs, "Service", "fraudops-redis")
    port = service["spec"]["ports"][0]["port"]
    secret = _one(docs, "Secret", "fraudops-redis")["data"]
    url = urlsplit(base64.b64decode(secret["FRAUDOPS_STATE_REDIS_URL"]).decode())
    ns = service["metadata"]["namespace"]
    assert (url.scheme, url.hostname, url.port) == (
        "redis",
        f"fraudops-redis.{ns}.svc.cluster.local",
        port,
    )
    assert url.password == base64.b64decode(secret["REDIS_PASSWORD"]).decode()
    (redis,) = _one(docs, "Deployment", "fraudops-redis")["spec"]["template"]["spec"]["containers"]
    args = dict(zip(redis["args"][::2], redis["args"][1::2], strict=True))
    assert args["--requirepass"] == "$(REDIS_PASSWORD)"  # from the Secret, not a literal
    assert args["--appendonly"] == "yes" and args["--maxmemory-policy"] == "noeviction"
    assert _one(docs, "InferenceService")["spec"]["predictor"]["minReplicas"] == 2


def test_production_overlay_uses_tls_and_no_minio(rendered):
    docs = rendered["overlays/production"]
    config = _one(docs, "ConfigMap", "fraudops-s3-config")["data"]
    assert config["S3_USE_HTTPS"] == "1" and config["S3_VERIFY_SSL"] == "1"
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
    # a managed Redis over TLS, not the one of third-party/redis
    secret = _one(docs, "Secret", "fraudops-redis")["data"]
    assert base64.b64decode(secret["FRAUDOPS_STATE_REDIS_URL"]).startswith(b"rediss://")
    assert not [d for d in docs if d["kind"] == "Deployment" and "redis" in d["metadata"]["name"]]


@pytest.mark.parametrize("target", OVERLAYS)
def test_rbac_binds_the_drift_job(rendered, target):
    docs = rendered[target]
    binding = _one(docs, "RoleBinding")
    assert binding["roleRef"]["kind"] == "Role"
    role = _one(docs, "Role", binding["roleRef"]["name"])
    allowed = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("runs", "create"), ("experiments", "create"), ("experiments", "list")} <= allowed
    drift = _one(docs, "CronJob", "fraudops-drift")["spec"]["jobTemplate"]["spec"]["template"]
    for subject in binding["subjects"]:
        assert subject["kind"] == "ServiceAccount"
        assert subject["namespace"] == binding["metadata"]["namespace"]
        assert subject["name"] == drift["spec"]["serviceAccountName"]


# ---------------------------------------------------------------------------------------------
# the commands the manifests run, parsed by the real command-line parsers


def _parse_serving(args: list[str]):
    from serving.__main__ import build_parser

    return build_parser().parse_args(args)


def _parse_log_sink(args: list[str], monkeypatch):
    import argparse

    import serving.log_sink

    class Parsed(Exception):
        pass

    real = argparse.ArgumentParser.parse_args

    def parse_only(self, argv=None, namespace=None):
        raise Parsed(real(self, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    with pytest.raises(Parsed) as parsed:
        serving.log_sink.main(args)
    return parsed.value.args[0]


def _click_context(command_path: list[str], args: list[str]):
    import typer.main

    if command_path[0] == "fraudops":
        from fraudops.cli import app
    else:
        import importlib

        app = importlib.import_module(command_path[0]).app
    command = typer.main.get_command(app)
    for name in command_path[1:]:
        command = command.commands[name]
    return command.make_context(command_path[-1], list(args))


@pytest.mark.parametrize("target", OVERLAYS)
def test_model_server_arguments(rendered, target):
    isvc = _one(rendered[target], "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"  # where KServe looks for STORAGE_URI
    assert container["command"] == ["python", "-m", "serving"]
    args = _parse_serving(container["args"])
    assert args.model_name == isvc["metadata"]["name"]
    assert args.model_uri == "/mnt/models"  # where the storage initializer puts the bundle
    # docs/deploy.md patches /spec/predictor/containers/0/env/0/value to change the version
    assert container["env"][0]["name"] == "STORAGE_URI"
    storage_uri = container["env"][0]["value"]
    assert re.fullmatch(rf"s3://fraudops/models/{args.model_name}/v\d+", storage_uri)
    port = container["ports"][0]["containerPort"]
    assert args.http_port == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"requests", "limits"} <= container["resources"].keys()
    # several replicas of a version only with the online state shared in Redis, its URL (and
    # password) from a Secret
    predictor = isvc["spec"]["predictor"]
    env = {e["name"]: e for e in container["env"]}
    shared = env.get("FRAUDOPS_STATE_REDIS_URL")
    if shared is None:
        assert predictor["minReplicas"] == predictor["maxReplicas"] == 1
    else:
        assert shared["valueFrom"]["secretKeyRef"]["name"] == "fraudops-redis"
        assert 2 <= predictor["minReplicas"] <= predictor["maxReplicas"]
        assert predictor["scaleMetric"] == "concurrency"
    # no log line per request on the hot path (latency is in /metrics)
    assert args.enable_latency_logging is False and args.access_logging is False


@pytest.mark.parametrize("target", OVERLAYS)
def test_log_sink_arguments(rendered, target, monkeypatch):
    deployment = _one(rendered[target], "Deployment", "fraudops-log-sink")
    assert deployment["spec"]["replicas"] == 1  # pairs request and response events in memory
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "serving.log_sink"]
    args = _parse_log_sink(container["args"], monkeypatch)
    assert args.store == "s3://fraudops"
    assert args.port == container["ports"][0]["containerPort"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_drift_cronjob_command(rendered, target):
    cron = _one(rendered[target], "CronJob", "fraudops-drift")
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "monitoring.drift_job", "check"]
    assert container["args"][: len(DRIFT_ARGS)] == DRIFT_ARGS
    ctx = _click_context(["monitoring.drift_job", "check"], container["args"])
    assert ctx.params["retrain"] == "kfp" and ctx.params["store"] == "s3://fraudops"
    # exit 3 (drift) and 2 (configuration) fail the Job at once; the alert rule relies on it
    (rule, *_) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["containerName"] == container["name"]
    assert set(rule["onExitCodes"]["values"]) == {2, 3}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    token = {e["name"]: e["value"] for e in container["env"]}["KF_PIPELINES_SA_TOKEN_PATH"]
    assert str(Path(token).parent) in mounts


@pytest.mark.parametrize("target", OVERLAYS)
def test_alerts_cronjob_command(rendered, target):
    cron = _one(rendered[target], "CronJob", "fraudops-suspicious-alerts")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fraudops", "alerts", "suspicious"]
    ctx = _click_context(["fraudops", "alerts", "suspicious"], container["args"])
    assert ctx.params["store"] == "s3://fraudops"
    assert cron["spec"]["schedule"] == f"*/{ctx.params['minutes']:g} * * * *"


@pytest.mark.parametrize("target", OVERLAYS)
def test_state_prune_cronjob_runs_where_replicas_share_redis(rendered, target):
    """Retired versions' states leave Redis on a schedule, for the model the servers serve,
    with the registry and the Redis URL the servers use."""
    docs = rendered[target]
    isvc = _one(docs, "InferenceService")
    cron = _one(docs, "CronJob", "fraudops-state-prune")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fraudops", "state", "prune"]
    ctx = _click_context(["fraudops", "state", "prune"], container["args"])
    assert ctx.params["store"] == "s3://fraudops" and not ctx.params["dry_run"]
    assert ctx.params["name"] == isvc["metadata"]["name"]
    url = {e["name"]: e for e in container["env"]}["FRAUDOPS_STATE_REDIS_URL"]
    (server,) = isvc["spec"]["predictor"]["containers"]
    served = {e["name"]: e for e in server["env"]}["FRAUDOPS_STATE_REDIS_URL"]
    assert url["valueFrom"] == served["valueFrom"]


# ---------------------------------------------------------------------------------------------
# monitoring: selectors, PromQL and metric names


def _serving_metric_names() -> set[str]:
    from prometheus_client import CollectorRegistry

    from serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    ServingMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
    return names


KNOWN_EXTERNAL_METRICS = {  # Prometheus' own and kube-state-metrics'
    "up",
    "kube_job_status_failed",
    "kube_job_created",
    "kube_cronjob_status_last_schedule_time",
}
DASHBOARD_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$model": "fraud-detector"}


def _selectors(expr: str):
    import promql_parser

    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _check_promql(expr: str, where: str, known: set[str], namespace: str) -> None:
    for selector in _selectors(expr):
        assert selector.name in known, f"{where}: unknown metric {selector.name}"
        for matcher in selector.matchers.matchers:
            if matcher.name == "namespace":
                assert matcher.value == namespace, f"{where}: namespace {matcher.value}"
            if matcher.name == "job" and selector.name == "up":
                assert matcher.value == f"{namespace}/fraud-detector", where


def test_podmonitor_selects_the_predictor(rendered):
    docs = rendered["overlays/production"]
    isvc = _one(docs, "InferenceService")
    monitor = _one(docs, "PodMonitor")
    # the labels KServe puts on predictor pods (stable and canary revisions alike)
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # Knative renames the user container's port to "user-port" whatever the manifest says
    assert endpoint["port"] == "user-port" and endpoint["path"] == "/metrics"


def test_servicemonitor_selects_the_log_sink(rendered):
    docs = rendered["overlays/production"]
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service", "fraudops-log-sink")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_alert_rules_parse_and_use_existing_metrics(rendered):
    docs = rendered["overlays/production"]
    namespace = _one(docs, "PrometheusRule")["metadata"]["namespace"]
    known = _serving_metric_names() | KNOWN_EXTERNAL_METRICS
    alerts = set()
    for group in _one(docs, "PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            alerts.add(rule["alert"])
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
            _check_promql(rule["expr"], rule["alert"], known, namespace)
    expected = {
        "FraudopsServingErrorRateHigh",
        "FraudopsServingLatencyP99High",
        "FraudopsAlertRateSpike",
        "FraudopsDriftDetected",
    }
    assert expected <= alerts


def test_grafana_dashboard(rendered):
    import json

    docs = rendered["overlays/production"]
    configmap = _one(docs, "ConfigMap", "fraudops-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    dashboard = json.loads(text)
    known = _serving_metric_names() | KNOWN_EXTERNAL_METRICS
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(variable, value)
            _check_promql(expr, panel["title"], known, configmap["metadata"]["namespace"])
            used |= {s.name for s in _selectors(expr)}
    for metric in (
        "fraudops_serving_requests_total",
        "fraudops_serving_request_duration_seconds_bucket",
        "fraudops_serving_errors_total",
        "fraudops_serving_score_bucket",
        "fraudops_serving_alerts_total",
    ):
        assert metric in used, f"no panel shows {metric}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------------------------
# no credentials in the repository

CREDENTIAL = re.compile(
    r"(password|passwd|secret[_-]?key|access[_-]?key|token)\w*[\"']?\s*[:=]\s*[\"']?"
    r"(?P<value>[^\s\"'#]{6,})",
    re.IGNORECASE,
)


@pytest.mark.parametrize("target", [*TARGETS])
def test_rendered_secrets_hold_placeholders_only(rendered, target):
    for d in rendered[target]:
        if d["kind"] != "Secret":
            continue
        values = {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        values |= d.get("stringData", {})
        for key, value in values.items():
            assert value == "" or PLACEHOLDER.search(value), f"{d['metadata']['name']}.{key}"


def test_no_credentials_committed_in_manifests_or_deploy_guide():
    hits = []
    for path in [*MANIFESTS.rglob("*"), ROOT / "docs" / "deploy.md"]:
        if not path.is_file() or path.suffix == ".env":  # *.env: git-ignored, checked above
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in CREDENTIAL.finditer(line):
                value = match.group("value")
                if PLACEHOLDER.search(value) or value.startswith("$") or "{{" in value:
                    continue
                if re.fullmatch(r"[A-Za-z_./-]+", value) and "/" in value:
                    continue  # a path (e.g. KF_PIPELINES_SA_TOKEN_PATH)
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_credential_scan_catches_literals():
    literal = "".join(["wJal", "rXUt", "nFEMI"])  # assembled: no literal in this file
    for name, sep in (("MINIO_ROOT_PASSWORD", "="), ("AWS_SECRET_ACCESS_KEY", ": ")):
        assert CREDENTIAL.search(name + sep + literal)
        assert PLACEHOLDER.search(CREDENTIAL.search(name + sep + "changeme").group("value"))
    assert not PLACEHOLDER.search(literal)
