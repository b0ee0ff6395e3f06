"""The KubeRay manifest's pod hardening and shared trained-model storage, and a container image built from a clean
checkout (the web UI's npm assets built in the image, not copied from the build host)."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

DEPLOY = PROJECT_ROOT / "deploy"
RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
IMAGE_UID, IMAGE_GID = 1000, 100  # the `ray` user of rayproject/ray images (USER ray in deploy/Dockerfile)


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RAYSERVICE.read_text()) if doc]


def _pod_specs() -> dict[str, dict[str, Any]]:
    """The pod spec of the head and of every worker group, by group name."""
    (service,) = [doc for doc in _documents() if doc["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    return {name: group["template"]["spec"] for name, group in groups.items()}


def test_every_pod_runs_as_the_images_non_root_user_with_the_default_seccomp_profile() -> None:
    """Were: no securityContext at all, so a pod ran as whatever the image said, with the runtime's capabilities."""
    dockerfile_users = re.findall(r"^USER (\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert dockerfile_users[-1] == "ray"  # the user the uid below is rayproject/ray's
    for name, spec in _pod_specs().items():
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, name
        # runAsNonRoot needs a numeric uid: the kubelet refuses to start an image whose USER is a name otherwise
        assert (pod.get("runAsUser"), pod.get("runAsGroup"), pod.get("fsGroup")) == (IMAGE_UID, IMAGE_GID, IMAGE_GID)
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name


def test_every_container_drops_all_capabilities_and_cannot_escalate() -> None:
    (service,) = [doc for doc in _documents() if doc["kind"] == "RayService"]
    autoscaler = service["spec"]["rayClusterConfig"]["autoscalerOptions"]  # the container KubeRay adds to the head
    containers = [("autoscaler", autoscaler)]
    containers += [(f"{group}/{c['name']}", c) for group, spec in _pod_specs().items() for c in spec["containers"]]
    assert len(containers) == 1 + 2 * 3  # Ray container and metrics sidecar in each of the three groups
    for name, container in containers:
        security = container.get("securityContext", {})
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not security.get("privileged") and not security.get("capabilities", {}).get("add"), name


def test_trained_model_versions_live_on_one_read_write_many_claim_every_ray_pod_mounts() -> None:
    """Were: under IMGSERVE_CACHE_DIR (default <cache>/trained-models), an emptyDir per pod: a version trained
    through one pod was missing on the others and lost when the pod restarted."""
    claims = {doc["metadata"]["name"]: doc for doc in _documents() if doc["kind"] == "PersistentVolumeClaim"}
    used = set()
    for name, spec in _pod_specs().items():
        ray = spec["containers"][0]
        env = {var["name"]: var.get("value") for var in ray["env"]}
        path = env.get("IMGSERVE_TRAINED_MODELS_DIR")
        assert path, f"{name}: IMGSERVE_TRAINED_MODELS_DIR is not set (the default is under the per-pod cache)"
        (mount,) = [m for m in ray["volumeMounts"] if m["mountPath"] == path]
        assert not mount.get("readOnly"), name
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert "persistentVolumeClaim" in volume, f"{name}: {volume}"
        used.add(volume["persistentVolumeClaim"]["claimName"])
        cache = env.get("IMGSERVE_CACHE_DIR")
        assert cache and not Path(path).is_relative_to(cache), name
    (claim_name,) = used  # one claim, shared by every pod
    assert claims[claim_name]["spec"]["accessModes"] == ["ReadWriteMany"]
    readme = (DEPLOY / "README.md").read_text()
    assert claim_name in readme and "ReadWriteMany" in readme


def _stages(text: str) -> dict[str, str]:
    """Dockerfile build stages by name (the last, unnamed one as 'final'), each with its instructions."""
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    stages = {}
    for part in parts:
        first, _, body = part.partition("\n")
        name = first.split(" AS ")[1].strip() if " AS " in first else "final"
        stages[name] = body
    return stages


def test_the_image_builds_the_web_ui_assets_itself() -> None:
    """Were: /docs's Swagger UI and the maps' land outlines (serving/ui/node_modules) came into the image only if
    `make ui` had run on the build host (`COPY serving` took the host's folder); a clean checkout built an image
    without them. The image installs serving/ui/package.json in a node stage with the Makefile's own npm flags
    and copies the result; the host's node_modules is kept out of the build context."""
    stages = _stages(DOCKERFILE.read_text())
    assert "ui" in stages and "final" in stages
    ui = stages["ui"]
    assert re.search(r"^COPY serving/ui/package\.json ", ui, re.MULTILINE)
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    make_install = re.search(r"npm install ([^&\n]*?)\s*&&", makefile)
    assert make_install, "the Makefile's ui target changed: update this test and deploy/Dockerfile together"
    flags = set(make_install.group(1).split())
    (docker_install,) = re.findall(r"npm install ([^&\n\\]*)", ui)
    assert flags <= set(docker_install.split()), (flags, docker_install)  # --ignore-scripts: no install pings
    final = stages["final"]
    copied = re.search(r"^COPY --from=ui (?:--chown=\S+ )?(\S+) (\S+)$", final, re.MULTILINE)
    assert copied and copied.group(2).rstrip("/") in ("serving/ui/node_modules", "./serving/ui/node_modules")
    # after the sources: a later `COPY serving` must not be able to replace it
    assert final.index("COPY --from=ui") > final.index("COPY --chown=ray:users serving ./serving")
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    assert "serving/ui/node_modules" in ignored or "serving/ui/node_modules/" in ignored
    from serving.ui import LAND, SWAGGER  # what the server looks for under serving/ui

    assert LAND[0] == SWAGGER[0] == "node_modules"
    package = json.loads((PROJECT_ROOT / "serving" / "ui" / "package.json").read_text())
    assert {LAND[1], SWAGGER[1]} <= set(package["dependencies"])


def test_the_metrics_sidecar_sees_the_replicas_pids_and_drops_the_gauges_of_gone_ones() -> None:
    """Were: the sidecar (its own PID namespace) served the live gauges of replicas that had died or scaled down
    (`imgserve_model_info` counted them on, `imgserve_inflight_requests` kept their requests): the Ingress's own
    /metrics drops them, the sidecar did not look."""
    for name, spec in _pod_specs().items():
        (sidecar,) = [c for c in spec["containers"] if c["name"] == "imgserve-metrics"]
        assert spec.get("shareProcessNamespace") is True, name  # the PIDs in the multiprocess file names are its own
        script = "\n".join(sidecar["args"])
        assert 'forget_dead_processes(os.environ["PROMETHEUS_MULTIPROC_DIR"])' in script, name
        compile(script, f"{name} sidecar", "exec")  # the inline program is valid Python
