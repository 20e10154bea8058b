"""docker/Dockerfile, read (the image is not built here): the builder alone has a compiler, the
runtime installs the builder's wheels with none and runs the main job by default, and the test
target carries Debian's chromium and the test extras and runs the README's test command."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from tests.test_packaging import BUILD_FILES, PACKAGES, REPO

DOCKER = REPO / "docker"
COMPILERS = {"gcc", "g++", "clang", "build-essential", "cpp", "cc", "c++"}


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def packages(self) -> set[str]:
        """What its RUN lines install with apt-get."""
        words = set()
        for command in self.arguments("RUN"):
            for step in re.split(r"&&|;", command):
                if "apt-get install" in step:
                    words |= {w for w in shlex.split(step) if not w.startswith("-")}
        return words - {"apt-get", "install"}


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, in order (continued lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    found: dict[str, Stage] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            found[name.strip()] = Stage(base.strip())
        elif found:
            found[next(reversed(found))].instructions.append((instruction.upper(), args.strip()))
    return found


def readme_test_command() -> str:
    """The README's test command, which .ci/run runs as it is."""
    blocks = re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    (command,) = [block for block in blocks if block.startswith("sh tests/install-browser.sh")]
    assert (REPO / ".ci" / "run").read_text().splitlines()[-1] == command
    return command


def test_the_builder_alone_compiles_and_the_runtime_installs_its_wheels_without() -> None:
    builder, runtime = stages()["builder"], stages()["runtime"]
    assert {"gcc", "libc6-dev"} <= builder.packages()
    copied = {path for args in builder.arguments("COPY") for path in args.split()[:-1]}
    assert {*BUILD_FILES, *PACKAGES} <= copied  # all a wheel is built from
    assert any(run.startswith("pip wheel") and "/wheels" in run for run in builder.arguments("RUN"))

    assert runtime.base == builder.base  # one Python: the builder's wheels fit the runtime
    assert "-slim" in runtime.base  # python's full images come with gcc
    assert not runtime.packages() & COMPILERS
    (install,) = runtime.arguments("RUN")
    assert "from=builder,source=/wheels" in install and "--no-index" in install  # offline
    assert next(reversed(stages())) == "runtime"  # the default target
    assert json.loads(runtime.arguments("CMD")[-1]) == ["sparseperf", "run"]


def test_the_test_target_carries_chromium_and_the_test_extras_for_the_readme_command() -> None:
    test = stages()["test"]
    assert test.base == "builder"  # the README's command compiles the kernel in place
    assert "sh tests/install-browser.sh" in " ".join(test.arguments("RUN"))
    script = (REPO / "tests" / "install-browser.sh").read_text()
    assert re.search(r"apt-get install .*\bchromium$", script, re.M)
    assert any('-e ".[test]"' in run for run in test.arguments("RUN"))
    assert json.loads(test.arguments("CMD")[-1]) == ["sh", "-c", readme_test_command()]


def test_a_host_build_stays_out_of_the_image() -> None:
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"**/.venv", "**/*.so", "**/*.egg-info", "build", "dist"} <= set(ignored)
