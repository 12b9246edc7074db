"""Checks of the config that a JSON schema cannot express (relations between keys), and the
Snakefile's ``onerror:`` report of what each failed job's log says."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from galsep.errors import ConfigError
from galsep.methods import registry

__all__ = ["check", "failed_job_logs", "failure_report"]


def check(config: Mapping) -> None:
    """Raise :class:`ConfigError` naming the key when values contradict each other."""
    size = config["cutouts"]["size"]
    if config["source"] == "synthetic":
        syn = config["synthetic"]
        usable = syn["tile_size"] - 2 * syn["edge_width"]
        if size > usable:
            raise ConfigError(
                f"cutouts.size = {size} is larger than the covered part of a synthetic tile"
                f" (synthetic.tile_size - 2 * synthetic.edge_width = {usable})"
            )
        for key in ("target_mag_range", "interloper_mag_range", "star_mag_range"):
            if key not in syn:
                continue
            lo, hi = syn[key]
            if lo >= hi:
                raise ConfigError(f"synthetic.{key} = [{lo}, {hi}] must be increasing")
    views = config["views"]
    if views["downsample_2x"] + views["downsample_4x"] > 1:
        raise ConfigError("views.downsample_2x + views.downsample_4x must not exceed 1")
    net = config["network"]
    levels = len(net["channels"])
    if size % 2 ** (levels - 1):
        raise ConfigError(
            f"cutouts.size = {size} must divide by 2^(levels - 1) = {2 ** (levels - 1)} for network.channels"
        )
    if any(i >= levels for i in net["attention_levels"]):
        raise ConfigError(
            f"network.attention_levels {net['attention_levels']} name levels beyond the {levels} of network.channels"
        )
    if config["diffusion"]["sigma_min"] >= config["diffusion"]["sigma_max"]:
        raise ConfigError("diffusion.sigma_min must be below diffusion.sigma_max")
    for f in (2, 4):
        if views[f"downsample_{f}x"] > 0 and size % f:
            raise ConfigError(f"views.downsample_{f}x > 0 needs cutouts.size divisible by {f} (got {size})")
    methods = registry()
    for name in [config.get("method", "ddprism"), *config.get("compare", [])]:
        if name not in methods:
            key = "method" if name == config.get("method", "ddprism") else "compare"
            raise ConfigError(f"{key}: unknown method {name!r}; the registered methods are {', '.join(methods)}")
    if views["downsample_2x"] + views["downsample_4x"] > 0:
        full_res = sorted({m for m in [config.get("method", "ddprism"), *config.get("compare", [])]
                           if methods[m].full_resolution})
        if full_res:
            raise ConfigError(f"method {full_res[0]!r} needs full-resolution views: set views.downsample_2x and"
                              " views.downsample_4x to 0, or leave it out of method and compare")


SnakemakeLog = str | os.PathLike | Sequence[str | os.PathLike] | None
_ERROR_IN_RULE = re.compile(r"^Error in rule (\S+?):\s*$")
_LOG_LINE = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?\s*$")
_GALSEP_ERROR = re.compile(r"\bgalsep[\w.]* [\w-]+: ")


def failed_job_logs(snakemake_log: SnakemakeLog, since: float, logs_dir: str | os.PathLike = "logs"
                    ) -> list[tuple[str, Path]]:
    """(rule, log file) of each job that failed in this run.

    From the "Error in rule X: ... log: PATH" blocks of Snakemake's own log of the run when there is one;
    otherwise (or as well) the files under ``logs_dir`` written since ``since`` (a time.time()) whose last
    line is a galsep error or a traceback's last line.
    """
    found: list[tuple[str, Path]] = []
    # Snakemake 9 hands onerror a list of its log files (8 and earlier: one path or None)
    smk_logs = [snakemake_log] if isinstance(snakemake_log, (str, os.PathLike)) else list(snakemake_log or [])
    for smk in smk_logs:
        if not Path(smk).is_file():
            continue
        rule = None
        for line in Path(smk).read_text(errors="replace").splitlines():
            m = _ERROR_IN_RULE.match(line)
            if m:
                rule = m.group(1)
                continue
            m = _LOG_LINE.match(line)
            if rule and m:
                found += [(rule, Path(p.strip())) for p in m.group(1).split(",") if p.strip()]
                rule = None
    found = list(dict.fromkeys(found))
    seen = {p.resolve() for _, p in found}
    root = Path(logs_dir)
    if root.is_dir():
        for p in sorted(root.rglob("*.log")):
            try:
                if p.stat().st_mtime < since or p.resolve() in seen:
                    continue
                last = _last_lines(p, 1)
            except OSError:
                continue
            if last and (_GALSEP_ERROR.search(last[-1]) or re.match(r"^\w+(Error|Exception)\b", last[-1])):
                found.append((p.stem, p))
    return found


def _last_lines(path: Path, n: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        lines = f.read().decode(errors="replace").splitlines()
    return [line for line in lines if line.strip()][-n:]


def failure_report(snakemake_log: SnakemakeLog, since: float, logs_dir: str | os.PathLike = "logs",
                   tail: int = 8) -> str:
    """What to print when the workflow fails: per failed job, its one-line galsep error (or its log's
    last ``tail`` lines when there is none, e.g. a traceback), so the cause is on the terminal."""
    out = []
    for rule, path in failed_job_logs(snakemake_log, since, logs_dir):
        try:
            lines = _last_lines(path, tail)
        except OSError:
            out.append(f"galsep: rule {rule} failed; its log {path} cannot be read")
            continue
        errors = [line for line in lines if _GALSEP_ERROR.search(line)]
        if errors:
            line = errors[-1][_GALSEP_ERROR.search(errors[-1]).start():].strip()  # type: ignore[union-attr]
            out.append(f"galsep: rule {rule} failed: {line}  (log: {path})")
        else:
            body = "\n".join("    " + line for line in lines)
            out.append(f"galsep: rule {rule} failed; the last lines of {path}:\n{body}")
    return "\n".join(out)
