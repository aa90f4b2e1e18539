"""Every environment variable the engine reads is documented: in .env.example (the copyable list)
and in docs/configuration.md (the reference), which list the same variables."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("opentracy_site", "gateway", "traces", "datasets", "distillation", "routing")
READS = re.compile(
    r"""(?:env_(?:str|int|float|bool|list)\(|os\.environ\.get\(|os\.environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def read_by_the_code() -> set[str]:
    names: set[str] = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "/tests/" not in path.as_posix():
                names |= set(READS.findall(path.read_text()))
    return names


def listed(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(), re.M))


def test_every_variable_read_is_documented_in_both_places() -> None:
    code = read_by_the_code()
    assert {"DATABASE_URL", "CLICKHOUSE_URL", "REDIS_URL", "OPENTRACY_ROUTER_EMBED_THREADS"} <= code  # the scan works
    example = listed(ROOT / ".env.example", r"^([A-Z][A-Z0-9_]+)=")
    reference = listed(ROOT / "docs" / "configuration.md", r"^\| `([A-Z][A-Z0-9_]+)` \|")
    assert not code - example, f"read but not in .env.example: {sorted(code - example)}"
    assert example == reference, f"out of step: {sorted(example ^ reference)}"


def test_a_bad_value_stops_the_start_naming_the_variable(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OPENTRACY_VAR_DIR": str(tmp_path), "OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE": "50"}
    env["DJANGO_SETTINGS_MODULE"] = "opentracy_site.settings"
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE must be from 1000 to 20000" in started.stderr
