"""The cluster rollout target: a KServe InferenceService, patched through the Kubernetes API.

KServe splits traffic between the last revision rolled out with 100% (the stable version) and
the newest revision, by ``spec.predictor.canaryTrafficPercent``. Every call here is one JSON
merge patch (``application/merge-patch+json``) of the InferenceService:

============  ================================================================================
start         the model's storage URI -> the canary version, ``canaryTrafficPercent: N``, and the
              annotation ``rollout.fraudops.io/stable-storage-uri`` remembering the stable URI;
              guarded by ``metadata.resourceVersion`` (a concurrent edit fails with 409)
traffic       ``canaryTrafficPercent: N``
promote       ``canaryTrafficPercent`` removed (KServe: 100% to the newest revision, which becomes
              the rolled-out one) and the annotation removed
rollback      ``canaryTrafficPercent: 0`` first (all traffic back to the stable revision at
              once), then the storage URI restored to the stable one and the annotation removed,
              guarded by ``resourceVersion``; ``canaryTrafficPercent: 0`` stays, so the restored
              spec's new revision gets no traffic while it starts (remove the field by hand
              before an ordinary ``kubectl apply`` of a new version)
============  ================================================================================

The storage URI is ``spec.predictor.model.storageUri`` for a predictor with a model format, or
the ``STORAGE_URI`` variable of the container named ``kserve-container`` for a custom predictor
(this project's ``manifests/base/inferenceservice.yaml``). Custom object merge patches replace
lists whole, so the second case sends the predictor's containers as read, with that one value
changed.

``canaryTrafficPercent`` only works in Knative mode (``Serverless`` before KServe 0.16). The mode
is read from ``status.deploymentMode``, the annotation ``serving.kserve.io/deploymentMode``, or
the cluster default (``deploy`` in the ``inferenceservice-config`` ConfigMap); in Standard
(``RawDeployment``) mode the field does nothing, so every change is refused with what to do
instead.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from typing import Any

from monitoring.rollout_base import (
    Backend,
    CanaryExistsError,
    NoCanaryError,
    RolloutError,
    TargetState,
    TargetUnavailableError,
    UnsupportedDeploymentError,
)

__all__ = [
    "GROUP",
    "PLURAL",
    "STABLE_ANNOTATION",
    "VERSION",
    "InferenceServiceTarget",
    "deployment_mode",
    "storage_uri",
    "version_of",
]

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
STABLE_ANNOTATION = "rollout.fraudops.io/stable-storage-uri"
CONTAINER = "kserve-container"
KNATIVE_MODES = ("Knative", "Serverless")
RAW_MODES = ("Standard", "RawDeployment")
_URI_VERSION = re.compile(r"/models/(?P<model>[^/]+)/(?P<version>v\d+)/?$")


def version_of(uri: str) -> str:
    """The bundle version a storage URI names (``.../models/<name>/v3`` -> ``v3``), else the URI."""
    match = _URI_VERSION.search(uri)
    return match["version"] if match else uri


def _model_of(uri: str) -> str | None:
    match = _URI_VERSION.search(uri)
    return match["model"] if match else None


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc.get("spec", {}).get("predictor", {})


def storage_uri(isvc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the InferenceService names its model: the URI, and a merge-patch builder's input.

    Returns:
        The current URI, and ``{"kind": "model"}`` or ``{"kind": "container", "container": i,
        "env": j}``.

    Raises:
        RolloutError: neither ``spec.predictor.model.storageUri`` nor a ``STORAGE_URI`` variable
            on ``kserve-container`` is set.
    """
    predictor = _predictor(isvc)
    model = predictor.get("model") or {}
    if model.get("storageUri"):
        return model["storageUri"], {"kind": "model"}
    for i, container in enumerate(predictor.get("containers") or []):
        if container.get("name") != CONTAINER:
            continue
        for j, variable in enumerate(container.get("env") or []):
            if variable.get("name") == "STORAGE_URI" and variable.get("value"):
                return variable["value"], {"kind": "container", "container": i, "env": j}
    name = isvc.get("metadata", {}).get("name", "?")
    raise RolloutError(
        f"InferenceService {name}: cannot find its model's storage URI; expected "
        f"spec.predictor.model.storageUri or a STORAGE_URI variable on the container named "
        f"{CONTAINER} (as in manifests/base/inferenceservice.yaml)"
    )


def _storage_fragment(isvc: dict[str, Any], uri: str) -> dict[str, Any]:
    """The ``spec.predictor`` part of a merge patch that sets the storage URI to ``uri``."""
    _, where = storage_uri(isvc)
    if where["kind"] == "model":
        return {"model": {"storageUri": uri}}
    containers = copy.deepcopy(_predictor(isvc)["containers"])
    containers[where["container"]]["env"][where["env"]]["value"] = uri
    return {"containers": containers}


def deployment_mode(
    isvc: dict[str, Any], cluster_default: str | None = None
) -> tuple[str | None, str]:
    """The InferenceService's deployment mode and where it was read.

    In order: ``status.deploymentMode`` (what the controller uses), the annotation, Knative
    revisions in the status, the cluster default.
    """
    status = isvc.get("status") or {}
    if status.get("deploymentMode"):
        return status["deploymentMode"], "status.deploymentMode"
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    if annotations.get(MODE_ANNOTATION):
        return annotations[MODE_ANNOTATION], f"annotation {MODE_ANNOTATION}"
    predictor_status = (status.get("components") or {}).get("predictor") or {}
    if predictor_status.get("latestCreatedRevision"):
        return "Knative", "Knative revisions in status.components.predictor"
    if cluster_default:
        return cluster_default, "the cluster default (inferenceservice-config, key deploy)"
    return None, "nowhere: no status, no annotation, cluster default unreadable"


def _refusal(name: str, namespace: str, mode: str | None, where: str) -> str:
    what_to_do = (
        "Either switch it to Knative mode (annotation "
        f"{MODE_ANNOTATION}: Knative, or Serverless on KServe 0.15 and older; needs Knative "
        "Serving, see docs/deploy.md), or run the new version as a second InferenceService and "
        "split the traffic with a weighted Gateway API HTTPRoute (or an Istio VirtualService) in "
        "front of both, judging it with the canary analysis by hand (docs/rollout.md)."
    )
    if mode is None:
        return (
            f"InferenceService {namespace}/{name}: cannot tell its deployment mode ({where}), and "
            "KServe 0.16+ defaults to Standard, where canaryTrafficPercent does nothing. Set the "
            f"annotation {MODE_ANNOTATION}: Knative explicitly. " + what_to_do
        )
    return (
        f"InferenceService {namespace}/{name} runs in {mode} mode ({where}): KServe ignores "
        "canaryTrafficPercent there, so the new version would replace the old one for all "
        "traffic at once, with no canary step and no instant rollback. " + what_to_do
    )


class InferenceServiceTarget:
    """A KServe InferenceService in Knative mode as a rollout target.

    Args:
        name: The InferenceService.
        namespace: Its namespace.
        api: A ``kubernetes.client.CustomObjectsApi``.
        core_api: A ``kubernetes.client.CoreV1Api``, to read the cluster's default deployment
            mode (optional).
        kserve_namespace: Where KServe's ``inferenceservice-config`` ConfigMap lives.
        uri_for: Storage URI of a version (default: the current URI with its version segment
            replaced, ``s3://fraudops/models/fraud-detector/v1`` -> ``.../v4``).
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        api: Any,
        core_api: Any | None = None,
        kserve_namespace: str = "kserve",
        uri_for: Callable[[str], str] | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.api = api
        self.core_api = core_api
        self.kserve_namespace = kserve_namespace
        self.uri_for = uri_for
        self.description = f"InferenceService {namespace}/{name}"
        self._generation: int | None = None
        self._cluster_default: str | None = None
        self._cluster_default_read = False

    @classmethod
    def connect(
        cls,
        name: str,
        namespace: str,
        kubeconfig: str | None = None,
        context: str | None = None,
        **kwargs: Any,
    ) -> InferenceServiceTarget:
        """Connect with a kubeconfig (default ``$KUBECONFIG`` or ``~/.kube/config``), or the
        in-cluster service account when running in a pod without one."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
        except (ConfigException, OSError) as e:
            raise TargetUnavailableError(
                f"no usable Kubernetes configuration ({e}); pass --kubeconfig, set $KUBECONFIG, "
                "or run inside the cluster"
            ) from e
        return cls(
            name,
            namespace,
            client.CustomObjectsApi(api_client),
            client.CoreV1Api(api_client),
            **kwargs,
        )

    # -- Kubernetes calls ------------------------------------------------------------------

    def _call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return func(*args, **kwargs)
        except ApiException as e:
            hint = {
                404: f"is it deployed? `kubectl -n {self.namespace} get inferenceservice`",
                403: "your Kubernetes user needs get and patch on "
                f"inferenceservices.serving.kserve.io in {self.namespace}",
                409: "it was changed by someone else meanwhile; check `fraudops rollout status` "
                "and run the command again",
                422: "the KServe webhook rejected the change; read its message above",
            }.get(e.status, "see the API server's message")
            message = _api_message(e)
            raise TargetUnavailableError(
                f"{what} {self.description}: {e.status} {e.reason}: {message} ({hint})"
            ) from e
        except (HTTPError, OSError) as e:
            raise TargetUnavailableError(
                f"{what} {self.description}: cannot reach the Kubernetes API ({e}); check the "
                "kubeconfig's cluster and your network"
            ) from e

    def _get(self) -> dict[str, Any]:
        return self._call(
            "reading",
            self.api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
        )

    def _patch(self, body: dict[str, Any]) -> dict[str, Any]:
        isvc = self._call(
            "patching",
            self.api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            body,
        )
        self._generation = isvc.get("metadata", {}).get("generation")
        return isvc

    def cluster_default_mode(self) -> str | None:
        """``defaultDeploymentMode`` of KServe's ``inferenceservice-config`` (None: unreadable)."""
        if self._cluster_default_read or self.core_api is None:
            return self._cluster_default
        self._cluster_default_read = True
        try:
            config_map = self.core_api.read_namespaced_config_map(
                "inferenceservice-config", self.kserve_namespace
            )
            deploy = json.loads((config_map.data or {}).get("deploy") or "{}")
            self._cluster_default = deploy.get("defaultDeploymentMode")
        except Exception:  # unreadable (RBAC, another namespace): the default is only a hint
            self._cluster_default = None
        return self._cluster_default

    def _require_knative(self, isvc: dict[str, Any]) -> str:
        mode, where = deployment_mode(isvc, self.cluster_default_mode())
        if mode not in KNATIVE_MODES:
            raise UnsupportedDeploymentError(_refusal(self.name, self.namespace, mode, where))
        return mode

    # -- the target protocol ---------------------------------------------------------------

    def _state(self, isvc: dict[str, Any]) -> TargetState:
        current, _ = storage_uri(isvc)
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        stable_uri = annotations.get(STABLE_ANNOTATION)
        percent = _predictor(isvc).get("canaryTrafficPercent")
        mode, where = deployment_mode(isvc, self.cluster_default_mode())
        predictor_status = ((isvc.get("status") or {}).get("components") or {}).get(
            "predictor"
        ) or {}
        details = {
            "mode": mode,
            "mode_from": where,
            "canaryTrafficPercent": percent,
            "storage_uri": current,
            "traffic": predictor_status.get("traffic"),
            "latestReadyRevision": predictor_status.get("latestReadyRevision"),
            "latestRolledoutRevision": predictor_status.get("latestRolledoutRevision"),
            "url": (isvc.get("status") or {}).get("url"),
        }
        if stable_uri and stable_uri != current:
            share = 100 if percent is None else int(percent)
            return TargetState(
                self.description,
                _model_of(current),
                Backend(version_of(stable_uri), stable_uri, 100 - share),
                Backend(version_of(current), current, share),
                details=details,
            )
        return TargetState(
            self.description,
            _model_of(current),
            Backend(version_of(current), current),
            None,
            details=details,
        )

    def state(self) -> TargetState:
        """Read the InferenceService."""
        return self._state(self._get())

    def _canary_uri(self, version: str, current: str) -> str:
        if self.uri_for is not None:
            return self.uri_for(version)
        if not _URI_VERSION.search(current):
            raise RolloutError(
                f"{self.description}: its storage URI {current} does not end in "
                "models/<name>/<version>, so the canary's URI cannot be derived; pass the store "
                "(--store s3://bucket) so the URI is built from it"
            )
        return _URI_VERSION.sub(lambda m: m[0].replace(m["version"], version, 1), current, count=1)

    def start(self, version: str, percent: int) -> TargetState:
        """Point the model at ``version`` with ``canaryTrafficPercent: percent`` (one patch)."""
        isvc = self._get()
        self._require_knative(isvc)
        current, _ = storage_uri(isvc)
        annotations = isvc.get("metadata", {}).get("annotations") or {}
        existing = _predictor(isvc).get("canaryTrafficPercent")
        if annotations.get(STABLE_ANNOTATION) and annotations[STABLE_ANNOTATION] != current:
            raise CanaryExistsError(
                f"{self.description} already has a canary ({version_of(current)} at "
                f"{existing}%); finish it first: `fraudops rollout promote` or `rollback`"
            )
        if existing not in (None, 0, 100):
            raise CanaryExistsError(
                f"{self.description} has canaryTrafficPercent {existing} set outside this tool; "
                "finish that canary first (remove the field to promote, set 0 to roll back)"
            )
        canary_uri = self._canary_uri(version, current)
        if canary_uri.rstrip("/") == current.rstrip("/"):
            raise RolloutError(
                f"{self.description} already serves {version} ({current}); nothing to roll out"
            )
        body = {
            "metadata": {
                "resourceVersion": isvc["metadata"]["resourceVersion"],
                "annotations": {STABLE_ANNOTATION: current},
            },
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": int(percent),
                    **_storage_fragment(isvc, canary_uri),
                }
            },
        }
        return self._state(self._patch(body))

    def wait_ready(
        self,
        timeout: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        poll_seconds: float = 5.0,
    ) -> bool:
        """Wait until KServe reports the newest revision ready (observed the last patch)."""
        deadline = clock() + timeout
        while True:
            isvc = self._get()
            status = isvc.get("status") or {}
            predictor = (status.get("components") or {}).get("predictor") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            observed = status.get("observedGeneration") or 0
            if (
                ready
                and observed >= (self._generation or 0)
                and predictor.get("latestCreatedRevision")
                and predictor.get("latestReadyRevision") == predictor.get("latestCreatedRevision")
            ):
                return True
            if clock() >= deadline:
                return False
            sleep(poll_seconds)

    def _require_canary(self, isvc: dict[str, Any]) -> str:
        self._require_knative(isvc)
        current, _ = storage_uri(isvc)
        stable = (isvc.get("metadata", {}).get("annotations") or {}).get(STABLE_ANNOTATION)
        if not stable or stable == current:
            raise NoCanaryError(
                f"{self.description} has no canary started by this tool (no "
                f"{STABLE_ANNOTATION} annotation); start one with `fraudops rollout start`"
            )
        return stable

    def set_traffic(self, percent: int) -> TargetState:
        """``canaryTrafficPercent: percent``."""
        self._require_canary(self._get())
        return self._state(
            self._patch({"spec": {"predictor": {"canaryTrafficPercent": int(percent)}}})
        )

    def promote(self) -> TargetState:
        """Remove ``canaryTrafficPercent``: the newest revision gets 100% and is rolled out."""
        self._require_canary(self._get())
        body = {
            "metadata": {"annotations": {STABLE_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        }
        return self._state(self._patch(body))

    def rollback(self) -> TargetState:
        """``canaryTrafficPercent: 0`` now, then the stable storage URI back in the spec."""
        stable_uri = self._require_canary(self._get())
        isvc = self._patch({"spec": {"predictor": {"canaryTrafficPercent": 0}}})
        body = {
            "metadata": {
                "resourceVersion": isvc["metadata"]["resourceVersion"],
                "annotations": {STABLE_ANNOTATION: None},
            },
            "spec": {"predictor": _storage_fragment(isvc, stable_uri)},
        }
        return self._state(self._patch(body))


def _api_message(error: Any) -> str:
    try:
        return json.loads(error.body).get("message") or str(error.body)[:300]
    except (TypeError, ValueError, AttributeError):
        return str(getattr(error, "body", "") or "")[:300]
