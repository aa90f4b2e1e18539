"""Static checks of the commands in the docs' `checked` blocks (tests/test_docs_snippets.py): each
program, subcommand, flag, file, make target, Compose service and profile they name must exist.
Parsed by the real parsers where we have them (the `opentracy` CLI, manage.py commands, Celery's
click commands, each bench script's argparse `--help`, pip's `--help`); what belongs to tools not
installed here (Docker, vLLM) is checked against deploy/docker-compose.yml, which
tests/test_deploy.py validates. A program with no check here fails: add one."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = "deploy/docker-compose.yml"
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


def logical_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined (comment-only lines kept as they are)."""
    out, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            current += line.rstrip()[:-1] + " "
        else:
            out.append(current + line)
            current = ""
    return out


def _fail(where: str, words: list[str], why: str) -> NoReturn:
    pytest.fail(f"{where}: `{shlex.join(words)}`: {why}")


@functools.cache
def _help_options(*argv: str) -> frozenset[str]:
    done = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return frozenset(OPTION.findall(done.stdout))


def _flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("-") and not re.fullmatch(r"-\d[\d.]*", w)]


def check_make(words: list[str], env: dict[str, str], where: str) -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    if missing := set(words[1:]) - targets:
        _fail(where, words, f"no make target {sorted(missing)}")


def check_pip(words: list[str], env: dict[str, str], where: str) -> None:
    if words[1] != "install":
        _fail(where, words, "only `pip install` is checked")
    if unknown := set(_flags(words[2:])) - _help_options(sys.executable, "-m", "pip", "install"):
        _fail(where, words, f"pip install has no {sorted(unknown)}")
    args = iter(words[2:])
    for word in args:
        if word in ("-r", "--requirement"):
            word = next(args)
            if not (ROOT / word).is_file():
                _fail(where, words, f"{word} does not exist")
        elif word == "." and not (ROOT / "pyproject.toml").is_file():
            _fail(where, words, "no pyproject.toml")


def check_opentracy(words: list[str], env: dict[str, str], where: str) -> None:
    from opentracy_site.cli import _parser

    try:
        _parser().parse_args(words[1:])
    except SystemExit:
        _fail(where, words, "refused by the `opentracy` command's parser")


def check_python(words: list[str], env: dict[str, str], where: str) -> None:
    script = words[1]
    if script == "manage.py":
        from django.core.management import CommandError, get_commands, load_command_class

        commands = get_commands()
        if words[2] not in commands:
            _fail(where, words, f"no management command {words[2]!r}")
        command = load_command_class(commands[words[2]], words[2])
        try:
            command.create_parser("manage.py", words[2]).parse_args(words[3:])
        except CommandError as exc:
            _fail(where, words, str(exc))
    elif script.startswith("bench/") and (ROOT / script).is_file():
        if unknown := set(_flags(words[2:])) - _help_options(sys.executable, script):
            _fail(where, words, f"{script} has no {sorted(unknown)} (see its --help)")
    else:
        _fail(where, words, f"no check for python {script}")


def check_celery(words: list[str], env: dict[str, str], where: str) -> None:
    """Parsed by Celery's own click commands (the same parse `celery` does before it starts)."""
    import click
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    from opentracy_site.celery import app

    group = celery.make_context("celery", words[1:])
    if group.params.get("app") != "opentracy_site":
        _fail(where, words, "-A must name the project's Celery app, opentracy_site")
    tokens: list[str] = [*group.protected_args, *group.args]  # the subcommand, then its arguments
    command = celery.get_command(group, tokens[0])
    if command is None:
        _fail(where, words, f"celery has no command {tokens[0]!r}")
    group.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)  # what its options look up
    try:
        command.make_context(tokens[0], tokens[1:], parent=group)
    except click.UsageError as exc:
        _fail(where, words, str(exc))


@functools.cache
def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / COMPOSE).read_text())
    return data


def check_docker(words: list[str], env: dict[str, str], where: str) -> None:
    """`docker compose`'s own flags are Docker's (not installed here); the file, profiles and
    services it names are ours."""
    if words[1] != "compose":
        _fail(where, words, "only `docker compose` is checked")
    services = _compose()["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    args = iter(words[2:])
    for word in args:
        if word in ("-p", "--project-name"):
            next(args)
        elif word in ("-f", "--file"):
            if (path := next(args)) != COMPOSE:
                _fail(where, words, f"the Compose file is {COMPOSE}, not {path}")
        elif word == "--env-file":
            if not (ROOT / next(args)).parent.is_dir():
                _fail(where, words, "the env file's folder does not exist")
        elif word == "--profile":
            if (profile := next(args)) not in profiles:
                _fail(where, words, f"no profile {profile!r} in {COMPOSE}")
        elif word in ("up", "logs", "config", "down", "ps", "pull", "build", "restart"):
            if unknown := {w for w in args if not w.startswith("-")} - set(services):
                _fail(where, words, f"no service {sorted(unknown)} in {COMPOSE}")
        else:
            _fail(where, words, f"no check for {word!r}")


def check_vllm(words: list[str], env: dict[str, str], where: str) -> None:
    """vLLM is not installed here: the command must match the Compose file's vllm service."""
    service = _compose()["services"]["vllm"]
    command = [str(c) for c in service["command"]]
    default_model = re.fullmatch(r"\$\{\w+:-(.+)\}", command[command.index("--model") + 1])
    if words[1] != "serve" or not default_model or words[2] != default_model.group(1):
        _fail(where, words, f"not `vllm serve <the vllm service's --model>` ({command})")
    if env != {k: str(v) for k, v in service["environment"].items()}:
        _fail(where, words, f"environment differs from the vllm service's {service['environment']}")
    options = words[3:]
    for i, word in enumerate(options):
        if not word.startswith("--"):
            continue
        value = options[i + 1] if i + 1 < len(options) and not options[i + 1].startswith("--") else None
        if word == "--port":
            if f":{value}/" not in " ".join(service["healthcheck"]["test"]):
                _fail(where, words, "--port differs from the vllm service's health check")
        elif word not in command or (value is not None and command[command.index(word) + 1] != value):
            _fail(where, words, f"{word} {value or ''} differs from the vllm service's command")


def check_apt(words: list[str], env: dict[str, str], where: str) -> None:
    if words[1:3] != ["install", "-y"] or len(words) < 4:
        _fail(where, words, "only `apt-get install -y <packages>` is checked")


def check_bash(words: list[str], env: dict[str, str], where: str) -> None:
    script = ROOT / words[1]
    if not script.is_file() or subprocess.run(["bash", "-n", str(script)], check=False).returncode:
        _fail(where, words, f"{words[1]} is missing or not valid bash")


CHECKS: dict[str, Callable[[list[str], dict[str, str], str], None]] = {
    "make": check_make,
    "pip": check_pip,
    ".venv/bin/pip": check_pip,
    "opentracy": check_opentracy,
    ".venv/bin/python": check_python,
    ".venv/bin/celery": check_celery,
    "docker": check_docker,
    "vllm": check_vllm,
    "apt-get": check_apt,
    "bash": check_bash,
}


def check_command(words: list[str], where: str) -> None:
    """One shell command (already split): leading VAR=value assignments and `nice -n N` are
    peeled off, then the program's check runs."""
    env, words = {}, list(words)
    while words and ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if words[:2] == ["nice", "-n"]:
        words = words[3:]
    check = CHECKS.get(words[0])
    if check is None:
        _fail(where, words, f"no check for `{words[0]}`: add one to tests/doc_commands.py")
    check(words, env, where)
