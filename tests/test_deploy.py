"""deploy/: the Compose file validates with docker-compose (installed by .ci/run) and describes the
distributed mode whole: health checks, several web replicas, the env each engine process needs,
and the same processes as the Procfile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
ENGINE_ENV = ("DATABASE_URL", "CLICKHOUSE_URL", "REDIS_URL", "SECRET_KEY")


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install -y docker-compose (.ci/run does)"
    clean = {k: v for k, v in os.environ.items() if k not in ENGINE_ENV}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "vllm", "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def services() -> dict[str, Any]:
    result = compose_config(SECRET_KEY="test-secret")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return dict(config["services"])


def test_compose_file_is_valid_and_needs_a_secret() -> None:
    assert compose_config(SECRET_KEY="test-secret").returncode == 0
    refused = compose_config()
    assert refused.returncode != 0 and "set SECRET_KEY" in refused.stderr


def test_every_long_running_service_has_a_health_check() -> None:
    found = services()
    expected = {"postgres", "redis", "clickhouse", "migrate", "web", "lb", "worker", "beat", "gpu-worker", "vllm"}
    assert set(found) == expected
    for name, service in found.items():
        if name != "migrate":  # a one-off that must exit 0 (service_completed_successfully)
            assert service.get("healthcheck", {}).get("test"), name


def test_web_scales_out_behind_the_load_balancer_and_processes_share_the_servers() -> None:
    found = services()
    assert int(found["web"]["deploy"]["replicas"]) >= 2
    assert "web" in found["lb"]["depends_on"]
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "http://web:8000" in nginx and "Upgrade" in nginx  # websockets pass through
    for name in ("migrate", "web", "worker", "beat", "gpu-worker"):
        env = found[name]["environment"]
        assert all(env.get(k) for k in ENGINE_ENV), name
        assert env["OPENTRACY_EMBEDDED_WORKER"] == "false", name
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        assert "@clickhouse:8123/" in env["CLICKHOUSE_URL"] and "@postgres:5432/" in env["DATABASE_URL"], name
    assert found["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--enable-lora" in found["vllm"]["command"]


def test_every_engine_variable_is_documented_and_the_procfile_matches() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    for name in ("web", "worker"):
        missing = set(services()[name]["environment"]) - documented
        assert not missing, f"{name}: {missing} not in .env.example"
    lines = (ROOT / "deploy" / "Procfile").read_text().splitlines()
    processes = {line.split(":", 1)[0] for line in lines if line and not line.startswith("#")}
    assert processes == {"release", "web", "worker", "beat", "gpu-worker"}
    assert processes - {"release"} <= set(services())


def test_adapters_are_on_the_volume_vllm_reads_at_the_same_path() -> None:
    """vLLM loads the lora_path the engine sends it: the adapter folder must be on the `models`
    volume, mounted at the same place in the processes that write, export and serve adapters."""
    found = services()
    adapter_dir = found["web"]["environment"]["OPENTRACY_ADAPTER_DIR"]
    for name in ("web", "worker", "gpu-worker", "vllm"):
        mounts = [_mount(v) for v in found[name]["volumes"]]  # (source, target) short or long syntax
        targets = [target for source, target in mounts if source == "models"]
        assert targets and adapter_dir.startswith(targets[0] + "/"), name
    for name in ("web", "worker", "gpu-worker"):
        assert found[name]["environment"]["OPENTRACY_ADAPTER_DIR"] == adapter_dir, name
    assert found["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def _mount(volume: str | dict[str, Any]) -> tuple[str, str]:
    if isinstance(volume, dict):
        return str(volume.get("source")), str(volume.get("target"))
    source, target = volume.split(":")[:2]
    return source, target
