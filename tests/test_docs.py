"""The docs tell the truth: every `snakemake ...` command in the code blocks of README.md and docs/*.md
dry-runs as typed in a scratch copy of the workflow, CITATION.cff is valid and cites every method, and
the files, modules and links the docs and config.yaml comments point to exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from workflow import ROOT, copy_workflow

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

# Documented commands that cannot be dry-run as typed, and why; the rest of each command is dry-run
# without the flags named here.
NOT_AS_TYPED = {
    "snakemake --report report.html": (
        "--report", "--report reads the finished results and ignores -n: on a fresh copy it stops at "
        "'results/metrics.json marked for report but does not exist'"),
}
# The README's "Your own images" makes its demo directory first; it runs as setup like the `echo` lines.
DEMO = ["python", "-m", "galsep.sources.files", "demo"]
# What docs/real-data.md says to put in place by hand before a `source: mast` run (empty files do for -n).
MAST_PREREQUISITES = ("resources/gzh/metadata_main.csv", "resources/gzh/gz_hubble_main.csv")


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced block (``` also indented in lists) and every
    indented block (4 spaces after a blank line, outside fences)."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            blocks.append((i + 2, [x[indent:] for x in lines[i + 1 : j]]))
            i = j + 1
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            blocks.append((i + 1, [x[4:] for x in lines[i:j]]))
            i = j
        else:
            i += 1
    return blocks


def shell_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(offset, line) with backslash continuations joined."""
    out, k = [], 0
    while k < len(lines):
        start, line = k, lines[k].strip()
        while line.endswith("\\") and k + 1 < len(lines):
            k += 1
            line = line[:-1] + " " + lines[k].strip()
        out.append((start, line))
        k += 1
    return out


def documented_commands() -> list[dict]:
    """Every snakemake command of the docs' code blocks, with the file-writing `echo` lines before it."""
    found = []
    for doc in DOCS:
        for first, lines in code_blocks(doc.read_text()):
            setup = []
            for offset, line in shell_lines(lines):
                if not re.match(r"(echo|snakemake|python -m galsep\.sources\.files demo)\s|[A-Za-z_][A-Za-z0-9_]*=\S",
                                line):
                    continue  # not a shell line of interest (python, make, prose in an indented block)
                words = shlex.split(line, comments=True)
                env = {}
                while words and ENV_ASSIGNMENT.match(words[0]):
                    key, value = words.pop(0).split("=", 1)
                    env[key] = value
                if words[:1] == ["echo"] and ">" in line or words[:4] == DEMO:
                    setup.append(line)
                elif words[:1] == ["snakemake"]:
                    found.append({"doc": doc.relative_to(ROOT).as_posix(), "line": first + offset, "args": words[1:],
                                  "env": env, "setup": list(setup), "typed": shlex.join(words)})
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands_to_check():
    docs = {c["doc"] for c in COMMANDS}
    assert {"README.md", "docs/real-data.md", "docs/manifold.md", "docs/slurm.md"} <= docs, docs
    typed = {c["typed"] for c in COMMANDS}
    assert "snakemake --cores all --configfile workflow/configs/mast-2tiles.yaml" in typed
    for command in NOT_AS_TYPED:  # an exception for a command the docs no longer give is stale
        assert command in typed, command


def dry_run(command: dict, workdir: Path) -> subprocess.CompletedProcess:
    """``snakemake -n`` with the command's arguments and environment, in its own copy of the workflow."""
    copy_workflow(workdir)
    for line in command["setup"]:
        words = shlex.split(line, comments=True)
        if words[:4] == DEMO:  # this interpreter, whatever `python` is on PATH
            subprocess.run([sys.executable, *words[1:]], cwd=workdir, check=True, capture_output=True)
        else:
            subprocess.run(line, shell=True, cwd=workdir, check=True)
    args = list(command["args"])
    if command["typed"] in NOT_AS_TYPED:
        k = args.index(NOT_AS_TYPED[command["typed"]][0])
        del args[k : k + 2]
    overlays = [yaml.safe_load((workdir / a).read_text()) for a in args if a.endswith(".yaml")]
    if "source=mast" in args or any(o.get("source") == "mast" for o in overlays):
        for name in MAST_PREREQUISITES:
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALSEP_")} | command["env"]
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as workflow.snakemake does
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dry_runs(request, tmp_path_factory) -> dict[str, Future]:
    """The selected commands' dry runs, two at a time (each is ~3 s of Snakemake start-up)."""
    wanted = [item.callspec.params["command"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_documented_command_dry_runs"]
    pool = ThreadPoolExecutor(max_workers=2)
    root = tmp_path_factory.mktemp("docs")
    runs = {f"{c['doc']}:{c['line']}": pool.submit(dry_run, c, root / f"run{i}") for i, c in enumerate(wanted)}
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c['doc']}:{c['line']}" for c in COMMANDS])
def test_documented_command_dry_runs(dry_runs, command):
    proc = dry_runs[f"{command['doc']}:{command['line']}"].result()
    assert proc.returncode == 0, (f"{command['typed']} ({command['doc']}:{command['line']}) does not dry-run:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def test_nested_config_values_arrive_as_strings():
    """Why real-data.md ships an overlay: Snakemake parses `--config mast='{tiles_limit: 2}'` to a string 2."""
    from snakemake.cli import parse_config

    assert parse_config(["mast={tiles_limit: 2}"]) == {"mast": {"tiles_limit": "2"}}
    assert parse_config(["seed=3"]) == {"seed": 3}


# The paper of every separation method (the schema's `method` enum), by arXiv id.
METHOD_PAPERS = {
    "ddprism": "2510.05205", "gibbs": "2510.05205", "basis": "2002.07942", "pcpca": "2012.07977",
    "clvm_linear": "1811.06094", "clvm_vae": "1811.06094", "nes": "1811.12739", "surf": "2606.04921",
    "segmentation": "10.1051/aas:1996164",
}
# What the methods build on: EM and MMPS (Rozet et al.), EDM, Gibbs diffusion, PQMass, GalSim.
OTHER_PAPERS = ("2405.13712", "2206.00364", "2402.19455", "2402.04355", "1407.7676")


def test_citation_cff_is_valid_and_cites_every_method():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    from galsep.methods import registry

    ours = {name for name, cls in registry().items() if cls.__module__.startswith("galsep.methods.")}
    assert ours == set(METHOD_PAPERS), "a method of galsep.methods without a paper here"
    ids = {}
    for ref in cff["references"]:
        assert ref["type"] and ref["title"] and ref["authors"], ref.get("title")
        for ident in ref.get("identifiers", []):
            ids[ident["value"].removeprefix("arXiv:")] = ref["title"]
    for arxiv in [*METHOD_PAPERS.values(), *OTHER_PAPERS]:
        assert arxiv in ids, arxiv
    assert "Wagner-Carena" in str(cff["references"][0]["authors"])
    assert any(r["type"] == "software" and r["title"] == "GalSim" for r in cff["references"])


def test_what_the_docs_and_config_comments_point_to_exists():
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)\)", doc.read_text()):
            if not re.match(r"[a-z]+://", target) and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: link {target}")
    comments = "\n".join(line.split("#", 1)[1] for line in (ROOT / "config.yaml").read_text().splitlines()
                         if "#" in line)
    for path in re.findall(r"[\w./-]+/[\w.-]+\.(?:md|yaml|smk|py)\b|\b[A-Z]+\.md\b", comments):
        if not path.startswith(("results/", "resources/")) and not (ROOT / path).exists():
            missing.append(f"config.yaml comment: {path}")
    for module in re.findall(r"\bgalsep(?:\.\w+)+", comments):
        base = ROOT / "src" / Path(*module.split("."))
        if not (base.with_suffix(".py").exists() or (base / "__init__.py").exists()):
            missing.append(f"config.yaml comment: {module}")
    assert not missing, missing
