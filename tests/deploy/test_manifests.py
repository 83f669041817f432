"""deploy/: what can be checked without a container engine is checked."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import validate

from gateway.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PERSONAS = Path(__file__).resolve().parents[2] / "agents" / "personas"


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_match_their_schemas(path):
    """Every manifest validates strictly against the Kubernetes API schemas."""
    for doc in _docs(path):
        validate(doc, "1.30.0", strict=True)


@pytest.mark.parametrize("role", ["web", "worker"])
def test_deployments_probe_health_and_readiness(role):
    """Both roles run as non-root with liveness on /healthz and readiness on /readyz."""
    [deployment] = _docs(DEPLOY / "k8s" / f"deployment-{role}.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "ops": 9090}

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["args"][container["args"].index("--role") + 1] == role


def test_service_routes_only_the_public_port():
    """The Service reaches the webhook port; the operations port is not behind it."""
    [service] = _docs(DEPLOY / "k8s" / "service.yaml")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def _with_demo_env(monkeypatch):
    monkeypatch.setenv("ACME_HTTP_API_KEY", "k")
    monkeypatch.setenv("ACME_HTTP_SIGNING_SECRET", "s")


def test_shipped_gateway_configs_are_valid(monkeypatch):
    """The config in the ConfigMap and the compose config pass the gateway's own check."""
    _with_demo_env(monkeypatch)
    [configmap] = _docs(DEPLOY / "k8s" / "configmap.yaml")
    for data in (
        yaml.safe_load(configmap["data"]["gateway.yaml"]),
        yaml.safe_load((DEPLOY / "gateway.compose.yaml").read_text()),
    ):
        data["personas_dir"] = str(PERSONAS)  # the image's site-packages path is not here
        config = parse_config(data)
        assert config.store.url.startswith("redis://")
        assert (config.http.port, config.http.operations.port) == (8080, 9090)


def test_compose_runs_redis_with_aof_and_both_roles():
    """Compose keeps acknowledged messages durable (AOF) and splits web and worker."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert "--appendonly" in compose["services"]["redis"]["command"]
    roles = {
        name: svc["command"][svc["command"].index("--role") + 1]
        for name, svc in compose["services"].items()
        if "command" in svc and "--role" in svc["command"]
    }
    assert roles == {"web": "web", "worker": "worker"}


def test_image_entrypoint_runs_the_cli():
    """The container's entrypoint hands its arguments to `flowbiz` (here: --help)."""
    bindir = Path(sys.executable).parent
    assert shutil.which("flowbiz", path=str(bindir)), "flowbiz console script not installed"
    result = subprocess.run(  # noqa: S603 - our own entrypoint script
        ["/bin/sh", str(DEPLOY / "entrypoint.sh"), "--help"],
        env={**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


def test_systemd_unit_runs_a_role_per_instance():
    """The systemd template passes its instance name as the role."""
    unit = (DEPLOY / "systemd" / "flowbiz-gateway@.service").read_text()
    assert "--role %i" in unit
    assert "User=flowbiz" in unit


def test_attack_systemd_unit_keeps_created_files_from_other_local_users():
    """The unit's umask and state directory mode leave nothing readable to other users."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / "flowbiz-gateway@.service")
    service = parser["Service"]
    assert service["UMask"] == "0077"
    assert service["StateDirectoryMode"] == "0700"
