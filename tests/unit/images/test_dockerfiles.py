"""Dockerfile.runtime and Dockerfile.operator, checked without Docker.

There is no Docker here, so the images are never built. Instead both files are parsed
with dockerfile-parse and held to what the images promise: multi-stage, pinned bases,
a numeric non-root user, COPY sources that exist, the console script as entrypoint, no
compilers in the final stage, dspy in the runtime image and never in the operator's.

Every check is a function returning problems as "Dockerfile.x:LINE: what is wrong";
the real files must give none, and `test_check_catches` feeds each check a broken
Dockerfile to show it can fail.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dspy_operator.reconcile.desired import RUNTIME_UID

ROOT = Path(__file__).resolve().parents[3]

COMPILERS = {"gcc", "g++", "cc", "clang", "build-essential", "make", "cpp", "gfortran"}
# pip flags whose value is the next token (when not written as --flag=value).
PIP_VALUE_FLAGS = {
    "-r", "--requirement", "-c", "--constraint", "-f", "--find-links", "-i", "--index-url",
    "--extra-index-url", "-t", "--target", "--prefix", "--root", "--src", "--platform",
}


# --- parsing ---------------------------------------------------------------------------

@dataclass
class Instruction:
    name: str  # FROM, RUN, COPY, ...
    value: str  # continuation lines joined
    line: int  # 1-based, where the instruction starts


@dataclass
class Stage:
    index: int
    image: str
    alias: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    name: str
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def at(self, item: Instruction | Stage) -> str:
        return f"{self.name}:{item.line}"


def parse(name: str, text: str) -> Dockerfile:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[Stage] = []
    for entry in parser.structure:
        ins = Instruction(entry["instruction"], entry["value"], entry["startline"] + 1)
        if ins.name == "FROM":
            words = [w for w in ins.value.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), words[0], alias, ins.line))
        elif ins.name != "COMMENT" and stages:
            stages[-1].instructions.append(ins)
    return Dockerfile(name, stages)


def load(name: str) -> Dockerfile:
    return parse(name, (ROOT / name).read_text())


def flags_and_args(value: str) -> tuple[dict[str, str], list[str]]:
    """`--from=build src dst` -> ({"from": "build"}, ["src", "dst"]); JSON form too."""
    words = shlex.split(value)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    rest = " ".join(words)
    if rest.startswith("["):
        return flags, json.loads(rest)
    return flags, words


def commands(run_value: str) -> list[list[str]]:
    """The simple commands of a RUN line, split on && ; || and |."""
    _, args = flags_and_args(run_value)
    out: list[list[str]] = [[]]
    for word in shlex.split(" ".join(args), posix=True):
        if word in {"&&", ";", "||", "|"}:
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


def pip_installs(stage: Stage) -> list[tuple[Instruction, list[str]]]:
    """For each `pip install` in the stage, the targets it names (flags dropped)."""
    found = []
    for ins in stage.instructions:
        if ins.name != "RUN":
            continue
        for cmd in commands(ins.value):
            names = [Path(w).name for w in cmd]
            if "install" not in names or not any(n.startswith("pip") for n in names):
                continue
            after = cmd[names.index("install") + 1 :]
            targets, skip = [], False
            for word in after:
                if skip:
                    skip = False
                elif word in PIP_VALUE_FLAGS:
                    skip = True
                    if word in {"-r", "--requirement"}:
                        targets.append(word)  # a requirements file: contents unknown here
                elif not word.startswith("-"):
                    targets.append(word)
            found.append((ins, targets))
    return found


def scripts(package: str) -> set[str]:
    return set(pyproject(package).get("project", {}).get("scripts", {}))


def pyproject(package: str) -> dict:
    return tomllib.loads((ROOT / package / "pyproject.toml").read_text())


# --- the checks ------------------------------------------------------------------------

def check_multi_stage(df: Dockerfile) -> list[str]:
    if len(df.stages) >= 2:
        return []
    where = df.at(df.stages[0]) if df.stages else f"{df.name}:1"
    return [f"{where}: one FROM; a builder stage and a final stage are needed"]


def check_pinned(df: Dockerfile) -> list[str]:
    """Every external base names an exact x.y.z version tag or a sha256 digest, and the
    stages share one base (the builder's wheels must fit the final interpreter)."""
    problems, aliases, bases = [], set(), set()
    for stage in df.stages:
        image = stage.image
        if image not in aliases:
            bases.add(image)
            name, _, digest = image.partition("@")
            tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else ""
            if digest:
                if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                    problems.append(f"{df.at(stage)}: {image}: malformed digest")
            elif not tag or tag == "latest":
                problems.append(f"{df.at(stage)}: {image}: no tag or `latest`; pin a version")
            elif not re.match(r"\d+\.\d+\.\d+(-|$)", tag):
                problems.append(
                    f"{df.at(stage)}: {image}: tag {tag!r} moves; use an exact x.y.z tag or a digest"
                )
        if stage.alias:
            aliases.add(stage.alias)
    if len(bases) > 1:
        problems.append(f"{df.name}: stages use different bases {sorted(bases)}")
    return problems


def check_user(df: Dockerfile, uid: int) -> list[str]:
    users = [i for i in df.final.instructions if i.name == "USER"]
    if not users:
        return [f"{df.at(df.final)}: final stage sets no USER (runs as root)"]
    last = users[-1]
    user, _, group = last.value.strip().partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        return [f"{df.at(last)}: USER {last.value} is not numeric (runAsNonRoot cannot verify it)"]
    if int(user) == 0:
        return [f"{df.at(last)}: USER {last.value} is root"]
    if int(user) != uid:
        return [f"{df.at(last)}: USER {last.value}, but the pods run as uid {uid}"]
    return []


def dockerignored(source: str) -> str | None:
    ignore = ROOT / ".dockerignore"
    if not ignore.exists():
        return None
    path = source.strip("/").removeprefix("./")
    for pattern in ignore.read_text().splitlines():
        pattern = pattern.strip()
        if pattern and not pattern.startswith(("#", "!")) and fnmatch.fnmatch(path, pattern):
            return pattern
    return None


def check_sources(df: Dockerfile, root: Path = ROOT) -> list[str]:
    """COPY/ADD sources exist in the build context (the repository root) and are not
    .dockerignored; --from= (COPY, or RUN --mount) names an earlier stage."""
    problems = []
    for stage in df.stages:
        earlier = {s.alias for s in df.stages[: stage.index] if s.alias}
        earlier |= {str(i) for i in range(stage.index)}
        for ins in stage.instructions:
            if ins.name not in {"COPY", "ADD", "RUN"}:
                continue
            flags, args = flags_and_args(ins.value)
            froms = [flags["from"]] if "from" in flags else []
            if ins.name == "RUN":
                froms = [
                    part.partition("=")[2]
                    for value in re.findall(r"--mount=(\S+)", ins.value)
                    for part in value.split(",")
                    if part.startswith("from=")
                ]
            for name in froms:
                if name not in earlier:
                    problems.append(f"{df.at(ins)}: --from={name} is not an earlier stage")
            if ins.name == "RUN" or froms:
                continue
            for source in args[:-1]:
                if re.match(r"https?://", source):
                    problems.append(f"{df.at(ins)}: {source}: remote sources are not pinned")
                elif not list(root.glob(source.strip("/"))) and not (root / source).exists():
                    problems.append(f"{df.at(ins)}: {ins.name} source {source} does not exist")
                elif pattern := dockerignored(source):
                    problems.append(f"{df.at(ins)}: {source} is excluded by .dockerignore {pattern!r}")
    return problems


def check_entrypoint(df: Dockerfile, package: str) -> list[str]:
    declared = scripts(package)
    found = [i for i in df.final.instructions if i.name in {"ENTRYPOINT", "CMD"}]
    entry = next((i for i in reversed(found) if i.name == "ENTRYPOINT"), None) or (
        found[-1] if found else None
    )
    if entry is None:
        return [f"{df.at(df.final)}: final stage has no ENTRYPOINT or CMD"]
    if not entry.value.strip().startswith("["):
        return [f"{df.at(entry)}: {entry.name} in shell form; use exec form so signals reach it"]
    argv = json.loads(entry.value)
    if not argv or Path(argv[0]).name not in declared:
        return [
            f"{df.at(entry)}: {entry.name} {argv} is not a console script of {package}/ "
            f"({sorted(declared)})"
        ]
    return []


def check_no_compilers(df: Dockerfile) -> list[str]:
    problems = []
    for ins in df.final.instructions:
        if ins.name != "RUN":
            continue
        for cmd in commands(ins.value):
            if cmd[0] in {"apt-get", "apt", "apk"} and {"install", "add"} & set(cmd):
                for package in sorted(COMPILERS & {w.split("=")[0] for w in cmd}):
                    problems.append(f"{df.at(ins)}: final stage installs {package}")
    return problems


def is_dspy(target: str) -> bool:
    """A pip target that is dspy itself, the runtime, or the runtime's source."""
    name = re.split(r"[\[<>=!~;@ ]", target, maxsplit=1)[0]
    return canonicalize_name(name) in {"dspy", "dspy-ai", "dspy-runtime"} or (
        Path(target).name == "runtime"
    )


def check_runtime_installs(df: Dockerfile) -> list[str]:
    targets = [t for _, ts in pip_installs(df.final) for t in ts]
    if not any(canonicalize_name(re.split(r"[\[<>=]", t)[0]) == "dspy-runtime" for t in targets):
        return [f"{df.at(df.final)}: final stage does not pip install dspy-runtime ({targets})"]
    return []


def check_operator_installs(df: Dockerfile) -> list[str]:
    """The operator image installs the operator package and nothing else; never dspy,
    never the runtime (not its source either)."""
    problems = []
    for stage in df.stages:
        for ins, targets in pip_installs(stage):
            for target in targets:
                if is_dspy(target) or re.search(r"\bdspy\b(?![-_])", target):
                    problems.append(f"{df.at(ins)}: the operator image installs {target}")
                elif target not in {"/src/operator", "/src/operator/", "dspy-operator"}:
                    problems.append(f"{df.at(ins)}: installs {target}, not only the operator")
        for ins in stage.instructions:
            if ins.name in {"COPY", "ADD"}:
                flags, args = flags_and_args(ins.value)
                if "from" not in flags and any(a.strip("/").startswith("runtime") for a in args[:-1]):
                    problems.append(f"{df.at(ins)}: copies the runtime's source")
    return problems


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def check_runtime_depends_on_dspy(project: dict) -> list[str]:
    if "dspy" not in requirement_names(project["project"].get("dependencies", [])):
        return ["runtime/pyproject.toml: [project] dependencies do not include dspy"]
    return []


def check_operator_without_dspy(project: dict) -> list[str]:
    deps = requirement_names(project["project"].get("dependencies", []))
    bad = deps & {"dspy", "dspy-ai", "dspy-runtime"}
    return [f"operator/pyproject.toml: [project] dependencies include {sorted(bad)}"] if bad else []


def check_no_dspy_imports(package_dir: Path) -> list[str]:
    """No `import dspy`/`dspy_runtime` (nor import_module of them) anywhere in the package.
    An AST walk, not a text grep: docstrings saying "never imports dspy" are not imports."""
    banned = {"dspy", "dspy_runtime"}
    importers = {"import_module", "__import__"}
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        where = path.relative_to(package_dir.parent)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in importers
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                modules = [node.args[0].value]
            for module in modules:
                if module.split(".")[0] in banned:
                    problems.append(f"{where}:{node.lineno}: imports {module}")
    return problems


def installed_closure(dist: str) -> set[str]:
    """Every distribution `dist` pulls in, through installed metadata (no extras)."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


# --- the real files --------------------------------------------------------------------

IMAGES = {"Dockerfile.runtime": "runtime", "Dockerfile.operator": "operator"}
# The uid each image must run as: the runtime's is what the operator puts in its pods;
# the operator's is what the chart's podSecurityContext sets (charts/.../values.yaml).
UIDS = {"Dockerfile.runtime": RUNTIME_UID, "Dockerfile.operator": 10001}


@pytest.fixture(params=sorted(IMAGES), ids=str)
def image(request: pytest.FixtureRequest) -> tuple[Dockerfile, str]:
    return load(request.param), IMAGES[request.param]


def test_multi_stage(image: tuple[Dockerfile, str]) -> None:
    assert check_multi_stage(image[0]) == []


def test_bases_pinned(image: tuple[Dockerfile, str]) -> None:
    assert check_pinned(image[0]) == []


def test_final_user_numeric_non_root(image: tuple[Dockerfile, str]) -> None:
    df = image[0]
    assert check_user(df, UIDS[df.name]) == []


def test_copy_sources_exist(image: tuple[Dockerfile, str]) -> None:
    assert check_sources(image[0]) == []


def test_entrypoint_is_console_script(image: tuple[Dockerfile, str]) -> None:
    df, package = image
    assert check_entrypoint(df, package) == []


def test_no_compilers_in_final_stage(image: tuple[Dockerfile, str]) -> None:
    assert check_no_compilers(image[0]) == []


def test_runtime_image_installs_runtime_which_needs_dspy() -> None:
    assert check_runtime_installs(load("Dockerfile.runtime")) == []
    assert check_runtime_depends_on_dspy(pyproject("runtime")) == []


def test_operator_image_installs_only_the_operator() -> None:
    assert check_operator_installs(load("Dockerfile.operator")) == []
    assert check_operator_without_dspy(pyproject("operator")) == []


def test_operator_never_imports_dspy() -> None:
    assert check_no_dspy_imports(ROOT / "operator" / "dspy_operator") == []


def test_operator_dependencies_do_not_pull_dspy_in() -> None:
    # What `pip install /src/operator` brings, read from the venv's installed metadata.
    closure = installed_closure("dspy-operator")
    assert "kopf" in closure  # the walk did reach the operator's dependencies
    assert not closure & {"dspy", "dspy-ai", "dspy-runtime", "litellm"}, sorted(closure)


# --- every check can fail --------------------------------------------------------------

GOOD = """\
FROM python:3.11.13-slim-bookworm AS build
COPY operator/ /src/operator/
RUN python -m venv /opt/venv && /opt/venv/bin/pip install /src/operator
FROM python:3.11.13-slim-bookworm
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
ENTRYPOINT ["dspy-operator"]
"""


GOOD_RUNTIME = """\
FROM python:3.11.13-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential
COPY runtime/ /src/runtime/
RUN pip wheel --wheel-dir /wheels /src/runtime
FROM python:3.11.13-slim-bookworm
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \\
    python -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-index --find-links=/wheels dspy-runtime
USER 10001:10001
ENTRYPOINT ["dspy-runtime"]
"""


def broken(old: str, new: str, good: str = GOOD) -> str:
    assert old in good
    return good.replace(old, new)


BROKEN = [
    ("single-stage", check_multi_stage,
     "FROM python:3.11.13-slim\nUSER 10001\n", "Dockerfile.bad:1: one FROM"),
    ("latest", check_pinned,
     broken("FROM python:3.11.13-slim-bookworm\n", "FROM python:latest\n"), "Dockerfile.bad:4:"),
    ("untagged", check_pinned,
     broken("FROM python:3.11.13-slim-bookworm\n", "FROM python\n"), "no tag or `latest`"),
    ("moving tag", check_pinned,
     broken("FROM python:3.11.13-slim-bookworm AS", "FROM python:3.11-slim AS"),
     "Dockerfile.bad:1: python:3.11-slim: tag '3.11-slim' moves"),
    ("bad digest", check_pinned,
     broken("FROM python:3.11.13-slim-bookworm AS", "FROM python@sha256:abc AS"), "malformed digest"),
    ("two bases", check_pinned,
     broken("FROM python:3.11.13-slim-bookworm\n", "FROM python:3.12.1-slim\n"), "different bases"),
    ("no user", lambda df: check_user(df, 10001),
     broken("USER 10001:10001\n", ""), "Dockerfile.bad:4: final stage sets no USER"),
    ("named user", lambda df: check_user(df, 10001),
     broken("USER 10001:10001\n", "USER app\n"), "Dockerfile.bad:6: USER app is not numeric"),
    ("root", lambda df: check_user(df, 10001),
     broken("USER 10001:10001\n", "USER 0\n"), "USER 0 is root"),
    ("root last", lambda df: check_user(df, 10001),
     broken("USER 10001:10001\n", "USER 10001\nUSER 0:0\n"), "Dockerfile.bad:7: USER 0:0 is root"),
    ("other uid", lambda df: check_user(df, 10001),
     broken("USER 10001:10001\n", "USER 1000\n"), "but the pods run as uid 10001"),
    ("missing source", check_sources,
     broken("COPY operator/ ", "COPY operatr/ "), "Dockerfile.bad:2: COPY source operatr/ does not exist"),
    ("ignored source", check_sources,
     broken("COPY operator/ ", "COPY .venv "), "excluded by .dockerignore"),
    ("remote source", check_sources,
     broken("COPY operator/ ", "ADD https://example.com/x.tgz "), "remote sources"),
    ("unknown stage", check_sources,
     broken("--from=build", "--from=builder"), "Dockerfile.bad:5: --from=builder is not an earlier stage"),
    ("later stage", check_sources,
     broken("COPY operator/ /src/operator/\n", "COPY --from=1 /x /x\n"), "--from=1 is not an earlier"),
    ("mount of unknown stage", check_sources,
     broken("RUN python", "RUN --mount=type=bind,from=wheels,target=/w python"),
     "Dockerfile.bad:3: --from=wheels is not an earlier stage"),
    ("no entrypoint", lambda df: check_entrypoint(df, "operator"),
     broken('ENTRYPOINT ["dspy-operator"]\n', ""), "no ENTRYPOINT or CMD"),
    ("not a script", lambda df: check_entrypoint(df, "operator"),
     broken('["dspy-operator"]', '["kopf", "run"]'), "Dockerfile.bad:7: ENTRYPOINT ['kopf', 'run'] is not"),
    ("other package's script", lambda df: check_entrypoint(df, "operator"),
     broken('["dspy-operator"]', '["dspy-runtime"]'), "not a console script of operator/"),
    ("shell form", lambda df: check_entrypoint(df, "operator"),
     broken('ENTRYPOINT ["dspy-operator"]', "ENTRYPOINT dspy-operator"), "shell form"),
    ("cmd not a script", lambda df: check_entrypoint(df, "operator"),
     broken('ENTRYPOINT ["dspy-operator"]', 'CMD ["python", "-m", "x"]'), "CMD ['python'"),
    ("compiler in final", check_no_compilers,
     broken("USER 10001:10001\n", "RUN apt-get update && apt-get install -y --no-install-recommends \\\n"
            "    gcc curl && rm -rf /var/lib/apt/lists/*\nUSER 10001\n"),
     "Dockerfile.bad:6: final stage installs gcc"),
    ("build-essential in final", check_no_compilers,
     broken("USER 10001:10001\n", "RUN apt-get install -y build-essential=12.9\nUSER 10001\n"),
     "installs build-essential"),
    ("runtime image without runtime", check_runtime_installs,
     broken("/wheels dspy-runtime", "/wheels fastapi", GOOD_RUNTIME),
     "Dockerfile.bad:5: final stage does not pip install dspy-runtime", GOOD_RUNTIME),
    ("runtime installed in builder only", check_runtime_installs,
     broken("pip wheel --wheel-dir /wheels", "pip install", GOOD_RUNTIME).replace(
         "--find-links=/wheels dspy-runtime", "--find-links=/wheels"),
     "does not pip install dspy-runtime", GOOD_RUNTIME),
    ("dspy in operator image", check_operator_installs,
     broken("pip install /src/operator", "pip install /src/operator 'dspy>=3.4'"),
     "Dockerfile.bad:3: the operator image installs dspy>=3.4"),
    ("runtime in operator image", check_operator_installs,
     broken("pip install /src/operator", "pip install -e /src/runtime /src/operator"),
     "installs /src/runtime"),
    ("requirements file in operator image", check_operator_installs,
     broken("pip install /src/operator", "pip install -r req.txt /src/operator"),
     "installs -r, not only the operator"),
    ("runtime source in operator image", check_operator_installs,
     broken("COPY operator/ /src/operator/\n", "COPY operator/ runtime/ /src/\n"),
     "Dockerfile.bad:2: copies the runtime's source"),
]


@pytest.mark.parametrize(
    ("check", "text", "expected", "good"),
    [(*b[1:4], b[4] if len(b) > 4 else GOOD) for b in BROKEN],
    ids=[b[0] for b in BROKEN],
)
def test_check_catches(check, text: str, expected: str, good: str) -> None:
    # The same check passes the good text, so the failure is the one change's doing.
    assert check(parse("Dockerfile.bad", good)) == [], "the baseline must pass"
    problems = check(parse("Dockerfile.bad", text))
    assert any(expected in p for p in problems), problems


def test_pyproject_checks_catch() -> None:
    no_dspy = {"project": {"dependencies": ["fastapi>=0.115"]}}
    with_dspy = {"project": {"dependencies": ["kopf>=1.45", "DSPy[anthropic]>=3.4"]}}
    assert check_runtime_depends_on_dspy(no_dspy) == [
        "runtime/pyproject.toml: [project] dependencies do not include dspy"
    ]
    assert check_operator_without_dspy(with_dspy) == [
        "operator/pyproject.toml: [project] dependencies include ['dspy']"
    ]


def test_import_check_catches(tmp_path: Path) -> None:
    package = tmp_path / "dspy_operator"
    (package / "sub").mkdir(parents=True)
    (package / "ok.py").write_text('"""The operator never imports dspy."""\nimport dspy_operator.x\n')
    (package / "sub" / "a.py").write_text("import os\nfrom dspy.primitives import Example\n")
    (package / "sub" / "b.py").write_text("import importlib\nimportlib.import_module('dspy_runtime.app')\n")
    (package / "sub" / "c.py").write_text("def f():\n    import dspy as d\n")
    assert check_no_dspy_imports(package) == [
        "dspy_operator/sub/a.py:2: imports dspy.primitives",
        "dspy_operator/sub/b.py:2: imports dspy_runtime.app",
        "dspy_operator/sub/c.py:2: imports dspy",
    ]
