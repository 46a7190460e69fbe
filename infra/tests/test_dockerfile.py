"""The Dockerfile, read as text (no Docker engine runs here): multi-stage, non-root, no
credentials, every service binary installed, and the context leaves out target/ and .git."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def stages(ins: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for i in ins:
        if i[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(i)
    return out


def service_binaries() -> dict[str, str]:
    """Binary name → services/<dir>, from each service's Cargo.toml ([[bin]] names, else the
    package name for src/main.rs)."""
    out = {}
    for manifest in sorted(ROOT.glob("services/*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        bins = [b["name"] for b in data.get("bin", [])]
        if not bins and (manifest.parent / "src/main.rs").exists():
            bins = [data["package"]["name"]]
        for b in bins:
            out[b] = manifest.parent.name
    return out


def test_multi_stage_rust_builder_then_debian_slim_runtime(dockerfile):
    st = stages(dockerfile)
    assert len(st) == 2
    assert re.fullmatch(r"rust:\$\{RUST_VERSION\}-bookworm AS builder", st[0][0][1])
    assert st[1][0][1].startswith("debian:bookworm-slim")
    runs = " ".join(a for i, a in st[0] if i == "RUN")
    for cache in ("/usr/local/cargo/registry", "/usr/local/cargo/git", "/src/target"):
        assert f"--mount=type=cache,target={cache}" in runs
    # The locked dependency graph: the build script the builder runs passes --locked.
    assert "scripts/build-release.sh" in runs
    assert "--locked" in (ROOT / "scripts" / "build-release.sh").read_text()
    runtime_runs = " ".join(a for i, a in st[1] if i == "RUN")
    assert "ca-certificates" in runtime_runs
    assert "rust" not in " ".join(a for i, a in st[1] if i == "FROM")


def test_runtime_runs_as_uid_10001_on_port_8080_with_the_cli_as_entrypoint(dockerfile):
    runtime = stages(dockerfile)[-1]
    users = [a for i, a in runtime if i == "USER"]
    assert users == ["10001:10001"]
    assert "--uid 10001" in " ".join(a for i, a in runtime if i == "RUN")
    # USER comes before ENTRYPOINT/CMD and nothing switches back to root.
    order = [i for i, _ in runtime]
    assert order.index("USER") < order.index("ENTRYPOINT")
    assert [a for i, a in runtime if i == "EXPOSE"] == ["8080"]
    assert [a for i, a in runtime if i == "ENTRYPOINT"] == ['["gatehouse"]']


def test_no_credentials_are_baked_into_the_image(dockerfile):
    secretish = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY|API_KEY)", re.I)
    for ins, args in dockerfile:
        if ins in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(args), f"{ins} {args}"
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id"
    assert "BEGIN PRIVATE KEY" not in text
    # Only the built binaries reach the runtime stage: no source, no cargo home.
    copies = [a for i, a in stages(dockerfile)[-1] if i == "COPY"]
    assert copies == ["--from=builder /out/bin/ /usr/local/bin/"]


def test_every_service_binary_is_built_and_copied(dockerfile):
    bins = service_binaries()
    assert {"gatehouse", "gatehouse-ingress", "gatehouse-processor", "gatehouse-rotator"} <= set(bins)
    runs = " ".join(a for i, a in stages(dockerfile)[0] if i == "RUN")
    # The builder runs the one release build (the script CI runs too) into /out, which the runtime
    # stage copies whole; the script builds every services/*/ package, found by its manifest.
    assert re.search(r"(^|\s)scripts/build-release\.sh /out(\s|$)", runs), runs
    script = (ROOT / "scripts" / "build-release.sh").read_text()
    assert "services/*/Cargo.toml" in script
    assert "--release --locked --bins" in script
    for name, directory in bins.items():
        assert (ROOT / "services" / directory / "Cargo.toml").exists(), name
        assert name == directory_package(directory), f"{name}: the binary must be named after its package"


def directory_package(directory: str) -> str:
    data = tomllib.loads((ROOT / "services" / directory / "Cargo.toml").read_text())
    return data["package"]["name"]


def test_the_build_context_leaves_out_target_and_git_but_keeps_what_the_build_reads():
    ignored = [
        l.strip().rstrip("/")
        for l in (ROOT / ".dockerignore").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    assert "target" in ignored and ".git" in ignored
    # The build reads these (sqlx migrations, include_str! of docs/ and schemas/).
    for kept in ("shared", "services", "docs", "schemas", "Cargo.lock", "tests"):
        assert kept not in ignored
