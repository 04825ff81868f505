"""deploy/k8s, docker-compose.yml and the Dockerfile, checked offline.

Every object is validated strictly (unknown fields are errors) against the schemas of one
pinned Kubernetes version, shipped by kubernetes-validate. The kustomizations are rendered
by `kubectl kustomize` (no cluster needed), so the overlay's generators and patches are
checked as applied; each base file is also validated on its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.deploy.deploy_support import (
    ROOT,
    SETTING_NAMES,
    dockerfile_final_stage,
    parse_cli,
)

from banking_es.api.app import create_app
from banking_es.config import Settings

KUBERNETES_VERSION = "1.33.0"
K8S = ROOT / "deploy" / "k8s"
BASE, OVERLAY = K8S / "base", K8S / "overlays" / "example"
KUSTOMIZATIONS = [pytest.param(BASE, id="base"), pytest.param(OVERLAY, id="overlay")]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((path / "kustomization.yaml").read_text())
    return found


def render(path: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a copy of deploy/k8s in which each overlay's secrets.env is
    its secrets.env.example (the real one is not committed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders the kustomizations)")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    for example in copy.glob("overlays/*/secrets.env.example"):
        shutil.copy(example, example.with_name("secrets.env"))
    target = copy / path.relative_to(K8S)
    result = subprocess.run(
        [kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(resource: dict[str, Any]) -> None:
    where = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def pod_specs(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("Deployment", "Job")]


def includes(whole: Any, part: Any) -> bool:
    """Whether `part` is in `whole`: maps by key, lists of named items by name."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and includes(whole[key], value) for key, value in part.items()
        )
    if isinstance(part, list) and all(isinstance(item, dict) and "name" in item for item in part):
        named = {item.get("name"): item for item in whole} if isinstance(whole, list) else {}
        return all(includes(named.get(item["name"]), item) for item in part)
    return bool(whole == part)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes(
    path: Path, tmp_path: Path
) -> None:
    resources = render(path, tmp_path)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"Job", "ConfigMap"} <= kinds
    for resource in resources:
        validate(resource)


def test_every_resource_file_of_the_base_is_valid_on_its_own() -> None:
    files = kustomization(BASE)["resources"]
    assert files
    for name in files:
        for resource in load_all(BASE / name):
            validate(resource)


def test_the_overlay_patches_and_generators_are_applied(tmp_path: Path) -> None:
    resources = render(OVERLAY, tmp_path)
    spec = kustomization(OVERLAY)
    for patch in spec["patches"]:
        for wanted in load_all(OVERLAY / patch["path"]):
            found = one(resources, wanted["kind"], wanted["metadata"]["name"])
            assert includes(found["spec"], wanted["spec"]), f"{patch['path']} not applied"
    config = one(resources, "ConfigMap")["data"]
    for file in (BASE / "config.env", OVERLAY / "config.env"):
        assert env_file(file).items() <= config.items(), file
    assert set(one(resources, "Secret")["data"]) == set(env_file(OVERLAY / "secrets.env.example"))
    image = spec["images"][0]
    assert {c["image"] for pod in pod_specs(resources) for c in pod["containers"]} == {
        f"{image['newName']}:{image['newTag']}"
    }, "the migration Job and the pods must run one image"


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {name: value for name, value in (p for p in pairs if len(p) == 2) if name[:1] != "#"}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_the_pods_are_unprivileged_and_stop_gracefully(path: Path, tmp_path: Path) -> None:
    resources = render(path, tmp_path)
    user = dockerfile_final_stage()["USER"].split(":")[0]
    for pod in pod_specs(resources):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user  # the image's own user
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # uvicorn's graceful shutdown (timeout_graceful_shutdown in cli.py) must fit after it
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 10 + 5
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    hpa = one(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = one(resources, kind)["spec"]["selector"]
        assert selector.get("matchLabels", selector).items() <= labels.items(), kind


def container_env(
    resources: list[dict[str, Any]], container: dict[str, Any], *, secrets: bool = True
) -> dict[str, str | None]:
    """Every variable a container gets: its env and the ConfigMaps and Secrets of envFrom,
    which must be among `resources` (`secrets=False`: the base's, which has no Secret)."""
    found: dict[str, str | None] = {e["name"]: e.get("value") for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        kind, ref = next(
            (k, source[key])
            for key, k in (("configMapRef", "ConfigMap"), ("secretRef", "Secret"))
            if key in source
        )
        if kind == "Secret" and not secrets:
            continue
        found.update(one(resources, kind, ref["name"]).get("data", {}))
    return found


def test_every_variable_the_containers_set_is_a_setting(tmp_path: Path) -> None:
    resources = render(OVERLAY, tmp_path)
    names: dict[str, set[str]] = {}
    for pod in pod_specs(resources):
        for container in pod["containers"]:
            names[f"k8s {container['name']}"] = set(container_env(resources, container))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names["compose banking-es"] = set(compose["services"]["banking-es"]["environment"])
    names["Dockerfile"] = set(dockerfile_final_stage()["ENV"]) - {
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    }
    for where, variables in names.items():
        assert variables, where
        unknown = sorted(variables - SETTING_NAMES)
        assert not unknown, f"{where} sets variables banking-es does not read: {unknown}"


def routes() -> set[str]:
    """The API's paths, as its OpenAPI document lists them."""
    return set(create_app(Settings()).openapi()["paths"])


def test_the_image_command_and_health_check_exist() -> None:
    stage = dockerfile_final_stage()
    assert "ENTRYPOINT" not in stage  # Kubernetes' `command` below replaces CMD alone
    assert parse_cli(stage["CMD"]) == ["serve"]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", stage["HEALTHCHECK"])
    assert match, stage["HEALTHCHECK"]
    assert match[1] == stage["ENV"]["PORT"] == stage["EXPOSE"]
    assert match[2] in routes()


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_the_containers_commands_and_probes_exist(path: Path, tmp_path: Path) -> None:
    resources = render(path, tmp_path)
    commands = {
        r["kind"]: parse_cli(r["spec"]["template"]["spec"]["containers"][0]["command"])
        for r in resources
        if r["kind"] in ("Deployment", "Job")
    }
    assert commands == {"Deployment": ["serve"], "Job": ["migrate"]}
    assert (
        "--no-migrate"
        in one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    (container,) = one(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["http"]) == container_env(resources, container, secrets=False)["PORT"]
    probes = {k: v for k, v in container.items() if k.endswith("Probe")}
    assert {p["httpGet"]["path"] for p in probes.values()} == {"/health/live", "/health/ready"}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in probes.values():
        assert probe["httpGet"]["path"] in routes()
        assert probe["httpGet"]["port"] in ports
    service = one(resources, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_the_readme_compose_commands_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = re.findall(
        r"^docker compose exec (\S+) (banking-es .+)$",
        (ROOT / "README.md").read_text(),
        re.MULTILINE,
    )
    assert commands, "the README shows how to run the CLI in the container"
    for service, command in commands:
        assert service in compose["services"]
        parse_cli(command.split())
    secrets = {"JWT_SECRET", "REFRESH_TOKEN_SECRET"}
    environment = compose["services"]["banking-es"]["environment"]
    assert all("${" + name + ":?" in environment[name] for name in secrets)
