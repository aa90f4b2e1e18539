"""Every fenced code block of README.md and docs/*.md is run or checked here, as the invisible
comment on the line right above it says (docs/api.md is generated and has none):

    <!-- snippet: KIND [ARGS] -->

- `live [SETUP...]`: run against this session's engine: the real ASGI app on a loopback port
  (conftest's `server_url`), its database, the fake OpenAI/Anthropic upstreams as the project's
  providers. bash runs as `bash -euo pipefail` from the checkout (or a temp dir a SETUP fills),
  with ENGINE (the server's URL), OT_KEY (a key of the project) and DATABASE_URL (the test
  database, for manage.py) set, after `curl() { command curl --fail-with-body "$@"; }`: any
  non-2xx answer fails the block. A hard-coded `:8000` URL is refused: the docs write `$ENGINE`,
  and say in their prose that it is `http://127.0.0.1:8000` under `make run`. python runs in this
  process with `http://127.0.0.1:8000` replaced by the server's URL and `"ot-..."` by the key; the
  value of its last expression is checked. Each SETUP (below, by name) seeds what the block needs
  through the product's own services, then checks what the block did.
- `json METHOD PATH`: the JSON is sent to that endpoint of the test server and read back.
- `run`: run for real here in a fresh embedded engine (an empty OPENTRACY_VAR_DIR, no
  DATABASE_URL/REDIS_URL/CLICKHOUSE_URL, no SmolLM2 preload). A uvicorn command is started on
  127.0.0.1 and a free port without `--workers` (embedded mode's chDB takes one process per data
  path), probed at /healthz and /readyz, then stopped with SIGTERM.
- `env`: VAR=value lines: each is documented in .env.example and the settings accept the value.
- `checked [TEST...]`: not run here; `bash -n`, and every program, subcommand, flag, file, make
  target, Compose service and profile named is checked to exist (tests/doc_commands.py; a program
  it does not know fails the test). TEST names the test that runs those commands for real.

A block without a known comment fails `test_every_block_is_run_or_checked`.

Executed: README's create_api_key (against the test database; the printed key is then used on
/v1) and its OpenAI SDK example (SmolLM2 answering in-process); the curl examples of datasets.md
(a real clustering run over Banking77 traces, paging, rename, merge, split, cancel), routing.md
(policies, a profile run started and cancelled, /v1/route, a routed chat), distillation.md (a dry
run on a frozen dataset version) and traces.md (JSON Lines ingest); the alias JSON of gateway.md
and the ingest record of traces.md; deployment.md's migrate / migrate_clickhouse / collectstatic /
bootstrap / uvicorn (embedded, not its distributed mode) and its distributed variables.

Only checked, and why: README's `make run` / `make test` (they install and serve for good:
tests/test_package.py runs `opentracy serve`, the same steps, and .ci/run runs `make test`) and
its `pip install .` / `opentracy` block (tests/test_package.py installs the wheel in a fresh venv
and runs those commands); deployment.md's celery worker/beat processes (long-running, and in
distributed mode they would consume this session's queues), `docker compose` (no Docker here;
tests/test_deploy.py validates the Compose file) and `vllm serve` (needs a GPU and vLLM; its
flags must match the Compose file's vllm service); benchmarks.md (minutes each;
tests/test_bench_routing.py runs routing_quality.py --quick); datasets.md's deploy/fetch_mpnet.sh
(a 400 MB download; datasets/tests/test_embedding_model.py runs a configured model built offline).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from conftest import free_port
from tests.doc_commands import COMPOSE, check_command, logical_lines
from tests.support import read_trace

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!-- snippet: (.+?) -->\s*$")
DOC_URL = "http://127.0.0.1:8000"  # what the python examples connect to
CURL = 'curl() { command curl --fail-with-body "$@"; }\n'  # every non-2xx answer fails the block


@dataclass(frozen=True)
class Block:
    doc: str  # relative to the checkout
    line: int  # of the opening fence
    lang: str
    text: str
    marker: tuple[str, ...]  # the comment's words; empty when there is none

    @property
    def kind(self) -> str:
        return self.marker[0] if self.marker else ""

    @property
    def args(self) -> tuple[str, ...]:
        return self.marker[1:]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def discover(docs: list[Path], root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The fenced blocks of the docs, and the problems found on the way (unclosed fences, comments
    that are not right above a block)."""
    found, problems = [], []
    for path in docs:
        doc, lines = path.relative_to(root).as_posix(), path.read_text().splitlines()
        i = 0
        while i < len(lines):
            marker = MARKER.match(lines[i])
            if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                problems.append(f"{doc}:{i + 1}: snippet comment not right above a fenced block")
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            close = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), None)
            if close is None:
                problems.append(f"{doc}:{i + 1}: unclosed fence")
                break
            above = MARKER.match(lines[i - 1]) if i else None
            text = "\n".join(lines[i + 1 : close]) + "\n"
            words = tuple(above.group(1).split()) if above else ()
            found.append(Block(doc, i + 1, fence.group(2), text, words))
            i = close + 1
    return found, problems


BLOCKS, PROBLEMS = discover(DOCS)


def of_kind(kind: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind == kind]


# ---------------------------------------------------------------------------------------------
# live: setups, each a generator: seed, `yield`, receive what the block gave, check it.

Setup = Generator[None, Any, None]


@dataclass
class Live:
    server_url: str
    key: str
    people: dict[str, Any]
    fake_openai: Any
    tmp: Path
    cwd: Path = ROOT  # the docs' commands are written for the checkout (.venv/bin/python manage.py)

    @property
    def project(self) -> Any:
        return self.people["project"]


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _namer(body: dict[str, Any]) -> str:
    """The fake namer names a cluster after the first keyword it is shown."""
    first = body["messages"][-1]["content"].split("Keywords: ", 1)[1].split(",")[0].split("\n")[0].strip()
    return json.dumps({"name": f"About {first}", "description": f"Users asking about {first}."})


def banking_traffic(ctx: Live) -> Setup:
    """docs/datasets.md: 60 Banking77 prompts (3 intents) as traces of the alias `support-bot`, a
    `namer` alias on the fake upstream, and a worker to run the clustering."""
    from datasets.models import Cluster, ClusteringRun
    from datasets.tests.cluster_support import banking, messages, record, write
    from gateway.services import alias_set
    from opentracy_site.worker import start_embedded_worker

    pairs = banking(intents=("exchange_rate", "pin_blocked", "card_arrival"), per_intent=20)
    write([record(ctx.project.id, messages(p), 30 + n * 0.01, alias="support-bot") for n, (_i, p) in enumerate(pairs)])
    alias_set(project=ctx.project, name="namer", target="openai/scripted-namer", changed_by="test")
    ctx.fake_openai.scripts["scripted-namer"] = [_namer]
    start_embedded_worker()  # embedded: the server's own; distributed: a worker on REDIS_URL
    yield
    ctx.fake_openai.scripts.pop("scripted-namer", None)
    first, second = ClusteringRun.objects.filter(project=ctx.project).order_by("pk")
    assert first.status == "done" and first.trace_count == 60, first.message
    kept = Cluster.objects.get(run=first, name="Card not arrived")
    assert kept.worth_distilling and kept.name_source == "person" and kept.status == "split"
    assert Cluster.objects.filter(run=first, merged_into=kept).count() == 1
    assert Cluster.objects.filter(parent=kept).count() >= 2
    assert Cluster.objects.filter(run=first, name__startswith="About ").exists()  # named by the namer
    # The second run was cancelled while queued or running: it must stop before the tables go.
    _wait("the cancelled run to stop", lambda: ClusteringRun.objects.get(pk=second.pk).finished)
    assert ClusteringRun.objects.get(pk=second.pk).status == "cancelled"


def judge_alias(ctx: Live) -> Setup:
    """docs/routing.md: the profile run's judge alias on the fake upstream, and a worker."""
    from gateway.services import alias_set
    from opentracy_site.worker import start_embedded_worker
    from routing.models import ProfileRun, RoutingPolicy

    alias_set(project=ctx.project, name="judge-alias", target="openai/gpt-4o-mini", changed_by="test")
    start_embedded_worker()
    before = len(ctx.fake_openai.requests)
    out = yield
    assert re.search(r"^x-opentracy-route-policy: support\r?$", out, re.M | re.I), out[-2000:]
    chats = [r["body"]["messages"] for r in ctx.fake_openai.requests[before:]]
    assert [{"role": "user", "content": "2+2?"}] in chats  # the routed chat reached a candidate
    assert not RoutingPolicy.objects.filter(project=ctx.project).exists()  # deleted at the end
    assert not ProfileRun.objects.exists()  # cascaded with it


def frozen_dataset(ctx: Live) -> Setup:
    """docs/distillation.md: the dataset "Tickets" with version 1 frozen, and the teacher alias `smart`."""
    from datasets import curation
    from distillation.models import DistillationJob
    from gateway.services import alias_set

    labels = ["billing", "refund"] * 5
    lines = [{"prompt": f"Classify ticket {i}: about {w}", "response": w, "reference": w} for i, w in enumerate(labels)]
    data = b"\n".join(orjson.dumps(line) for line in lines)
    owner = ctx.people["owner"]
    dataset = curation.dataset_import_jsonl(project=ctx.project, name="Tickets", file=data, user=owner)
    curation.version_freeze(version=curation.open_version(dataset=dataset), user=owner)
    alias_set(project=ctx.project, name="smart", target="openai/gpt-4o-mini", changed_by="test")
    out = yield
    body = json.loads(out)
    assert body["estimate"]["teacher"]["calls"] > 0, body
    assert not DistillationJob.objects.exists()  # a dry run stores nothing


def _trace_json() -> dict[str, Any]:
    """The ingest record documented in docs/traces.md (its `json` block)."""
    (block,) = [b for b in of_kind("json") if b.args == ("POST", "/api/traces/ingest")]
    record: dict[str, Any] = json.loads(block.text)
    return record


def chat_logs(ctx: Live) -> Setup:
    """docs/traces.md: chat-logs.jsonl in the block's working directory, made of the documented
    record; the project keeps traces ten years, so the record's fixed date stays within retention."""
    from traces.services import retention_set

    retention_set(project=ctx.project, days=3650)
    first, second = _trace_json(), _trace_json()
    second["request"]["messages"][0]["content"] = "Hi again"
    ctx.cwd = ctx.tmp
    (ctx.tmp / "chat-logs.jsonl").write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(second) + b"\n")
    out = yield
    body = json.loads(out)
    assert body["ingested"] == 2, body
    rows = [read_trace(t) for t in body["trace_ids"]]
    assert [r["endpoint"] for r in rows] == ["ingest", "ingest"]
    assert "Hi again" in rows[1]["request_messages"]


def default_project(ctx: Live) -> Setup:
    """README: the project `default` that `make run` creates; the printed key must work on /v1."""
    from gateway.services import project_create

    project_create(slug="default", name="Default", owner=ctx.people["owner"])
    out = yield
    keys = re.findall(r"\bot-[\w-]{20,}", out)
    assert len(keys) == 1, out
    models = httpx.get(f"{ctx.server_url}/v1/models", headers={"Authorization": f"Bearer {keys[0]}"})
    assert models.status_code == 200, models.text


def local_model(ctx: Live) -> Setup:
    """README: SmolLM2 in-process. Its converted weights are cached under the checkout's var/models
    (as the local provider's tests do) unless OPENTRACY_LOCAL_MODEL_DIR is set."""
    from django.conf import settings

    from opentracy_site import clickhouse
    from traces.writer import get_writer

    old = settings.OPENTRACY_LOCAL_MODEL_DIR
    if "OPENTRACY_LOCAL_MODEL_DIR" not in os.environ:
        settings.OPENTRACY_LOCAL_MODEL_DIR = ROOT / "var" / "models"
    try:
        completion = yield
    finally:
        settings.OPENTRACY_LOCAL_MODEL_DIR = old
    assert completion.choices[0].message.content.strip()
    sql = "SELECT provider, status FROM traces WHERE project_id = {p:UInt64} AND requested_model = {m:String}"

    def traced() -> bool:
        get_writer().flush()
        _cols, rows = clickhouse.query(sql, {"p": ctx.project.id, "m": "local/smollm2-135m-instruct"})
        return ("local", 200) in [tuple(r) for r in rows]

    _wait("the local model's trace", traced, timeout=10)


SETUPS: dict[str, Callable[[Live], Setup]] = {
    "banking-traffic": banking_traffic,
    "judge-alias": judge_alias,
    "frozen-dataset": frozen_dataset,
    "chat-logs": chat_logs,
    "default-project": default_project,
    "local-model": local_model,
}


def session_database_url() -> str:
    """The test database as a DATABASE_URL, so manage.py in a block sees what the server sees."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    password = f":{quote(s['PASSWORD'], safe='')}" if s.get("PASSWORD") else ""
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{quote(s['USER'], safe='')}{password}@{s['HOST']}{port}/{s['NAME']}"


def run_bash(block: Block, ctx: Live) -> str:
    assert not re.search(r"(localhost|127\.0\.0\.1):8000", block.text), f"{block}: write $ENGINE, not a fixed URL"
    env = {**os.environ, "ENGINE": ctx.server_url, "OT_KEY": ctx.key, "DATABASE_URL": session_database_url()}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", CURL + block.text],
        cwd=ctx.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{block} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def run_python(block: Block, ctx: Live) -> Any:
    """The block with the documented URL and key replaced; returns its last expression's value."""
    assert DOC_URL in block.text and '"ot-..."' in block.text, f"{block}: nothing to point at the test server"
    source = block.text.replace(DOC_URL, ctx.server_url).replace('"ot-..."', repr(ctx.key))
    tree = ast.parse(source)
    last = tree.body[-1]
    if isinstance(last, ast.Expr):
        tree.body[-1] = ast.Assign(targets=[ast.Name("result_", ast.Store())], value=last.value)
        ast.fix_missing_locations(tree)
    namespace: dict[str, Any] = {}
    exec(compile(tree, str(block), "exec"), namespace)  # noqa: S102  # the README's own example
    return namespace.get("result_")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("block", of_kind("live"), ids=str)
def test_live_block(
    block: Block, server_url: str, api_key: str, people: dict[str, Any], providers: dict[str, Any], tmp_path: Path
) -> None:
    ctx = Live(server_url, api_key, people, providers["openai"], tmp_path)
    setups = [SETUPS[name](ctx) for name in block.args]
    try:
        for setup in setups:
            next(setup)
        result = run_python(block, ctx) if block.lang == "python" else run_bash(block, ctx)
        for setup in setups:
            with contextlib.suppress(StopIteration):
                setup.send(result)
                raise AssertionError(f"setup of {block} yielded twice")
    finally:
        for setup in setups:
            setup.close()  # runs what a setup restores, whatever happened


# ---------------------------------------------------------------------------------------------
# json: sent to the endpoint it documents, then read back.


def put_alias(api: httpx.Client, path: str, body: dict[str, Any]) -> None:
    resp = api.put(path, json=body)
    assert resp.status_code == 200, resp.text
    stored = api.get(path).json()
    assert {k: stored[k] for k in body} == body


def post_ingest(api: httpx.Client, path: str, body: dict[str, Any]) -> None:
    resp = api.post(path, json=body)
    assert resp.status_code == 201, resp.text
    (trace_id,) = resp.json()["trace_ids"]
    read_trace(trace_id)  # written by the trace writer within a flush interval
    got = api.get(f"/api/traces/{trace_id}")
    assert got.status_code == 200, got.text
    trace = got.json()
    assert trace["provider"] == "openai" and trace["metadata"]["team"] == "search", trace
    assert trace["tags"] == ["prod"] and trace["latency_ms"] == body["latency_ms"], trace


JSON_ENDPOINTS: dict[tuple[str, str], Callable[[httpx.Client, str, dict[str, Any]], None]] = {
    ("PUT", "/api/aliases/smart"): put_alias,
    ("POST", "/api/traces/ingest"): post_ingest,
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("block", of_kind("json"), ids=str)
def test_json_block(block: Block, server_url: str, api_key: str, people: dict[str, Any], providers: Any) -> None:
    from traces.services import retention_set

    retention_set(project=people["project"], days=3650)  # the ingest record's fixed date stays within it
    method, path = block.args
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as api:
        JSON_ENDPOINTS[(method, path)](api, path, json.loads(block.text))


# ---------------------------------------------------------------------------------------------
# run: for real, in a fresh embedded engine.


def serve_and_probe(words: list[str], env: dict[str, str], log: Path) -> None:
    """Starts the documented server on 127.0.0.1:<free port>, one process; /healthz and /readyz must
    answer 200 and SIGTERM must stop it cleanly."""
    args, port = [], free_port()
    rest = iter(words[1:])
    for word in rest:
        if word in ("--host", "--port", "--workers"):
            next(rest)  # replaced below, or dropped (--workers: chDB is one process per path here)
        else:
            args.append(word)
    with log.open("w") as out:
        server = subprocess.Popen([words[0], *args, "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def ready() -> bool:
            assert server.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                probes = [httpx.get(f"http://127.0.0.1:{port}{p}", timeout=5) for p in ("/healthz", "/readyz")]
                return all(r.status_code == 200 for r in probes)
            return False

        _wait("uvicorn to serve /healthz and /readyz", ready, timeout=90)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    # uvicorn shuts down gracefully, then re-raises the signal it got.
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log.read_text(), log.read_text()


@pytest.mark.parametrize("block", of_kind("run"), ids=str)
def test_run_block(block: Block, tmp_path: Path) -> None:
    outside = ("DATABASE_URL", "REDIS_URL", "CLICKHOUSE_URL")
    env = {k: v for k, v in os.environ.items() if k not in outside}
    env.update(OPENTRACY_VAR_DIR=str(tmp_path / "var"), OPENTRACY_LOCAL_MODEL_PRELOAD="false")
    for command in logical_lines(block.text):
        words = shlex.split(command, comments=True)
        if not words:
            continue
        if Path(words[0]).name == "uvicorn":
            serve_and_probe(words, env, tmp_path / "uvicorn.log")
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        assert done.returncode == 0, f"{block}: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# env and checked


@pytest.mark.parametrize("block", of_kind("env"), ids=str)
def test_env_block(block: Block, tmp_path: Path) -> None:
    pairs = [shlex.split(line, comments=True) for line in block.text.splitlines()]
    values = dict(w[0].split("=", 1) for w in pairs if w)
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert values and set(values) <= documented, f"{block}: not in .env.example: {set(values) - documented}"
    # The settings module parses them (typed helpers fail loudly on bad values); nothing connects.
    code = "import json; from django.conf import settings as s; print(json.dumps({k: getattr(s, k) for k in %r}))"
    env = {**os.environ, **values, "OPENTRACY_VAR_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code % sorted(values)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == values


@pytest.mark.parametrize("block", of_kind("checked"), ids=str)
def test_checked_block(block: Block) -> None:
    syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, f"{block}: {syntax.stderr}"
    for command in logical_lines(block.text):
        words = shlex.split(command, comments=True)
        if words:
            check_command(words, where=str(block))
    if "docker compose" in block.text:  # profiles named in its comments exist too
        for profile in re.findall(r"--profile (\S+)", block.text):
            check_command(["docker", "compose", "-f", COMPOSE, "--profile", profile, "config"], str(block))


# ---------------------------------------------------------------------------------------------


KINDS: dict[str, Callable[[Block], str]] = {
    "live": lambda b: "" if b.lang in ("bash", "python") and set(b.args) <= set(SETUPS) else "bash/python + SETUPs",
    "json": lambda b: "" if b.lang == "json" and tuple(b.args) in JSON_ENDPOINTS else "json METHOD PATH (known)",
    "run": lambda b: "" if b.lang in ("bash", "sh") and not b.args else "bash, no args",
    "env": lambda b: "" if b.lang in ("bash", "sh") and not b.args else "bash, no args",
    "checked": lambda b: "" if b.lang in ("bash", "sh") and all((ROOT / a).exists() for a in b.args) else "TESTs exist",
}


def test_every_block_is_run_or_checked() -> None:
    assert len(BLOCKS) >= 20 and not PROBLEMS, PROBLEMS  # the scan works
    unknown = [f"{b} ({' '.join(b.marker) or 'no snippet comment'})" for b in BLOCKS if b.kind not in KINDS]
    assert not unknown, f"blocks with no known way to run or check them: {unknown}"
    wrong = [f"{b}: {' '.join(b.marker)}: {KINDS[b.kind](b)}" for b in BLOCKS if KINDS[b.kind](b)]
    assert not wrong, wrong


def test_a_new_block_without_a_comment_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "new.md"
    doc.write_text("Text.\n\n```bash\necho hi\n```\n\n<!-- snippet: live -->\n\n```sh\nls\n```\n~~~\n")
    blocks, problems = discover([doc], tmp_path)
    assert [(str(b), b.kind) for b in blocks] == [("new.md:3", ""), ("new.md:9", "")]
    assert problems == ["new.md:7: snippet comment not right above a fenced block", "new.md:12: unclosed fence"]
