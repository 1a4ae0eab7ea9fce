"""The container image, without a Docker engine: hadolint on the Dockerfile, and the Dockerfile's
own steps — build context per .dockerignore, COPY, ENV, RUN, ENTRYPOINT and CMD — carried out in
a folder that stands for the image's root, then the installed proxy started the way the image
starts it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from proxy.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
CLIENT_KEY = "sk-image-test-key"
# The image's own absolute paths; in the tests they live under a folder standing for its root.
IMAGE_PATHS = re.compile(r"(?<![\w/.])(/opt/|/etc/tuned-proxy|/src)")


# --------------------------------------------------------------------------- reading the Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD."""
        start = self.arguments.index("[")
        words: list[str] = json.loads(self.arguments[start:])
        return words


@dataclass
class Stage:
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        (found,) = self.all(keyword)
        return found


def read_instructions(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in read_instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            stages.append(Stage(base=instruction.arguments))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


def env_assignments(instruction: Instruction) -> dict[str, str]:
    """`ENV A=1 B="two"` as a dict (the only ENV form the Dockerfile uses)."""
    pairs = (word.partition("=") for word in shlex.split(instruction.arguments))
    return {name: value for name, _, value in pairs}


# ----------------------------------------------------------------------------- the build context


def ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` stays within a folder, `**` crosses folders."""
    parts = []
    for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if token.startswith("**"):
            parts.append("(?:.*/)?" if token.endswith("/") else ".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern[str], str], ...]  # (include?, pattern, text)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            text = line.removeprefix("!").strip().strip("/")
            rules.append((include, ignore_pattern(text), text))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """Docker's rule: the last pattern matching the path or one of its folders decides."""
        parts = relative.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for include, pattern, _ in self.rules:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded

    def may_include_below(self, folder: str) -> bool:
        return any(include and text.startswith(f"{folder}/") for include, _, text in self.rules)


def copy_build_context(source: Path, target: Path) -> None:
    """What `docker build` would send: the files .dockerignore lets through."""
    ignore = DockerIgnore.read(source / ".dockerignore")
    for folder, subfolders, files in os.walk(source):
        here = Path(folder).relative_to(source)
        kept = []
        for name in subfolders:
            relative = (here / name).as_posix()
            if not ignore.excludes(relative) or ignore.may_include_below(relative):
                kept.append(name)
        subfolders[:] = kept
        for name in files:
            relative = (here / name).as_posix()
            if not ignore.excludes(relative):
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / relative, destination)


# --------------------------------------------------------------------------- carrying out the steps


@dataclass
class FakeImage:
    """A folder standing for the image's root, and the environment the image's steps set."""

    root: Path
    context: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None

    def path(self, value: str) -> str:
        """A value with the image's absolute paths moved under the fake root."""
        return IMAGE_PATHS.sub(lambda m: f"{self.root}{m.group(1)}", value)

    def expand(self, value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)

    def set_env(self, instruction: Instruction) -> None:
        for name, value in env_assignments(instruction).items():
            self.env[name] = self.expand(self.path(value))

    def copy(self, instruction: Instruction) -> None:
        if "--from=" in instruction.arguments:
            return  # from the build stage: both stages share this one fake root
        *sources, destination = shlex.split(instruction.arguments)
        if destination.startswith("/"):
            target = Path(self.path(destination))
        else:
            target = (self.workdir or self.root) / destination
        for source in sources:
            origin = self.context / source
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            elif destination.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    def run(self, instruction: Instruction, step_env: StepEnv) -> None:
        env = {**os.environ, **self.env, **step_env.add}
        for name in step_env.remove:
            env.pop(name, None)
        result = subprocess.run(
            ["/bin/sh", "-c", self.path(instruction.arguments)],
            cwd=self.workdir or self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        assert result.returncode == 0, f"RUN failed:\n{result.stdout}\n{result.stderr}"

    def build(self, stage: Stage, step_env: StepEnv) -> None:
        """A build stage: every step, RUN included."""
        for instruction in stage.instructions:
            if instruction.keyword == "RUN":
                self.run(instruction, step_env)
            else:
                self.apply(instruction)

    def finish(self, stage: Stage) -> None:
        """The final stage: its files and environment; its RUN steps only add the user."""
        for instruction in stage.instructions:
            if instruction.keyword == "RUN":
                assert re.match(r"(groupadd|useradd) ", instruction.arguments), instruction
            else:
                self.apply(instruction)

    def apply(self, instruction: Instruction) -> None:
        if instruction.keyword == "ENV":
            self.set_env(instruction)
        elif instruction.keyword == "WORKDIR":
            self.workdir = Path(self.path(instruction.arguments))
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            self.copy(instruction)


@dataclass(frozen=True)
class StepEnv:
    """What the test changes in the environment of the Dockerfile's RUN steps."""

    add: dict[str, str]
    remove: tuple[str, ...] = ()


def python_on_path() -> str:
    """A PATH whose `python` is this test's interpreter (the image's base has its own)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_command(stages: list[Stage]) -> list[str]:
    final = stages[-1]
    return final.one("ENTRYPOINT").exec_form() + final.one("CMD").exec_form()


def option_value(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def with_option(command: list[str], option: str, value: str) -> list[str]:
    changed = list(command)
    changed[changed.index(option) + 1] = value
    return changed


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"the proxy exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("the proxy never answered /healthz")


# ----------------------------------------------------------------------------- tests


def test_hadolint_passes() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_on_port_8080_with_keys_required() -> None:
    final = read_stages()[-1]
    user = final.one("USER").arguments
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "a numeric non-root user, for runAsNonRoot"
    assert final.one("EXPOSE").arguments == "8080"
    command = image_command(read_stages())
    assert command[0] == "tuned-proxy"
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)
    assert args.config == "/etc/tuned-proxy/tuned-proxy.yaml"
    assert not args.allow_unauthenticated


def test_healthcheck_asks_the_liveness_endpoint_on_the_served_port() -> None:
    healthcheck = read_stages()[-1].one("HEALTHCHECK")
    probe = " ".join(healthcheck.exec_form())
    port = option_value(image_command(read_stages()), "--port")
    assert f"http://127.0.0.1:{port}/healthz" in probe


def test_build_context_holds_what_the_build_copies_and_nothing_else(tmp_path: Path) -> None:
    copy_build_context(REPO, tmp_path)
    copied = {
        Path(source).parts[0]
        for stage in read_stages()
        for copy in stage.all("COPY")
        if "--from=" not in copy.arguments
        for source in shlex.split(copy.arguments)[:-1]
    }
    assert {path.name for path in tmp_path.iterdir()} == copied
    assert {"pyproject.toml", "proxy"} <= copied
    assert (tmp_path / "proxy" / "cli.py").is_file()
    assert not list(tmp_path.rglob("__pycache__"))


def test_dockerignore_matching_follows_docker_rules() -> None:
    ignore = DockerIgnore.read(REPO / ".dockerignore")
    assert ignore.excludes(".venv/bin/python")
    assert ignore.excludes("tests/test_config.py")
    assert not ignore.excludes("proxy/cli.py")
    assert ignore.excludes("proxy/__pycache__/cli.cpython-311.pyc")
    assert not ignore.excludes("policies/rewrite/x.yaml")


@pytest.fixture(scope="module")
def installed_image(tmp_path_factory: pytest.TempPathFactory) -> FakeImage:
    """The Dockerfile's steps carried out: a fresh virtualenv, `pip install .` of the context."""
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    copy_build_context(REPO, context)
    image = FakeImage(root=base / "root", context=context, env={"PATH": os.defpath})
    image.root.mkdir()
    # `python` is this interpreter; the pip cache only speeds up repeated test runs (pip reads
    # any value of PIP_NO_CACHE_DIR as "no cache", so it is removed, not changed).
    step_env = StepEnv(add={"PATH": python_on_path()}, remove=("PIP_NO_CACHE_DIR",))
    *build_stages, final = read_stages()
    for stage in build_stages:
        image.build(stage, step_env)
    image.finish(final)
    return image


def image_environment(image: FakeImage, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TUNED_")}
    return {**env, **image.env, **extra}


def resolved_command(image: FakeImage, port: int, host: str) -> list[str]:
    command = [image.path(word) for word in image_command(read_stages())]
    command[0] = shutil.which(command[0], path=image.env["PATH"]) or command[0]
    return with_option(with_option(command, "--port", str(port)), "--host", host)


@pytest.mark.slow
def test_the_image_install_serves_chat_with_a_client_key(installed_image: FakeImage) -> None:
    port = free_port()
    # Bound to loopback: everything else is the image's own command.
    command = resolved_command(installed_image, port, "127.0.0.1")
    assert command[0].startswith(str(installed_image.root)), "the virtualenv's entry point"
    env = image_environment(installed_image, TUNED_PROXY_KEYS=CLIENT_KEY)
    log = installed_image.root / "proxy.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=installed_image.root, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
        with client:
            answer = client.chat.completions.with_raw_response.create(
                model="weather", messages=[{"role": "user", "content": "Hello"}]
            )
            assert answer.headers["x-tuned-proxy-route"] == "weather"
            assert answer.parse().choices[0].message.content
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with wrong, pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()


@pytest.mark.slow
def test_the_image_command_refuses_all_interfaces_without_keys(installed_image: FakeImage) -> None:
    # The refusal comes before any socket is opened, so this never listens on 0.0.0.0.
    command = resolved_command(installed_image, free_port(), "0.0.0.0")
    result = subprocess.run(
        command,
        cwd=installed_image.root,
        env=image_environment(installed_image),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "TUNED_PROXY_KEYS" in result.stderr


# What the example config needs (and the demo reads): nothing more goes into the wheel.
DEMO_FILES = {
    "tuned-proxy.example.yaml",
    "support-full.yaml",
    "support-slim.yaml",
    "support-params.yaml",
    "support-bias.yaml",
    "support.tools.json",
    "weather.yaml",
    "weather.tools.json",
}


@pytest.mark.slow
def test_the_installed_package_ships_the_demo_files_and_no_data_sets(
    installed_image: FakeImage,
) -> None:
    (examples,) = installed_image.root.glob(
        "opt/tuned-proxy/lib/python3*/site-packages/proxy/examples"
    )
    assert {path.name for path in examples.iterdir()} == DEMO_FILES
    shipped = {path.name for path in installed_image.root.glob("etc/tuned-proxy/*")}
    assert not any(name.endswith(".jsonl") for name in shipped)
    assert "tuned-proxy.yaml" in shipped
