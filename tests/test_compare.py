"""The comparison table's cost columns come from Snakemake's benchmark files: a missing or malformed
one is an error naming it, and real benchmark files give a positive peak memory."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from galsep.errors import InputError
from galsep.evaluation.compare import comparison, read_benchmarks
from workflow import snakemake

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def real_benchmarks(tmp_path_factory):
    """Benchmark files written by Snakemake itself for two short Python jobs."""
    wd = tmp_path_factory.mktemp("bench")
    (wd / "Snakefile").write_text(textwrap.dedent('''
        rule all:
            input: "fit.done", "separate.done"

        rule job:
            output: "{name}.done"
            benchmark: "logs/benchmark/{name}.tsv"
            shell: "python -c 'import time; x = bytearray(50_000_000); time.sleep(1.5)' && touch {output}"
    '''))
    snakemake(wd, "--cores", "1", timeout=120)
    return {"fit": [str(wd / "logs/benchmark/fit.tsv")], "separate": [str(wd / "logs/benchmark/separate.tsv")]}


def _metrics(tmp_path, name: str) -> str:
    score = {"galaxy_psnr": {"mean": 30.0}, "random_psnr": {"mean": 25.0},
             "galaxy_flux_residual_pct": {"median": 1.0, "spread": 2.0}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({
        "method": name, "pqmass_p": 0.5, "sinkhorn": 0.1, "draws": 2, "psnr_range": 1.0,
        "methods": {f"{name}_mean": score, f"{name}_draw": score, "observation": score, "minus_median_random": score},
    }))
    return str(path)


def test_table_from_real_benchmarks_has_positive_peak_memory(tmp_path, real_benchmarks):
    table = comparison([_metrics(tmp_path, "pcpca"), _metrics(tmp_path, "nes")],
                       {"pcpca": real_benchmarks, "nes": real_benchmarks})
    for row in table["rows"][:2]:
        assert math.isfinite(row["peak_rss_mb"]) and row["peak_rss_mb"] > 40, row  # the 50 MB bytearray
        assert row["fit_s"] >= 1.5 and row["separate_s"] >= 1.5, row


def test_missing_benchmark_file_is_an_error_naming_it(tmp_path, real_benchmarks):
    missing = str(tmp_path / "logs/benchmark/posterior/nes/shard0.tsv")
    with pytest.raises(InputError, match=f"benchmark file {missing} is missing"):
        read_benchmarks([*real_benchmarks["fit"], missing])
    # in the table too: no NaN time and no -1 peak memory for the method whose files are gone
    with pytest.raises(InputError, match="shard0.tsv is missing"):
        comparison([_metrics(tmp_path, "nes")], {"nes": {"fit": [missing], "separate": [missing]}})


@pytest.mark.parametrize("text", ["", HEADER, "s\tmax_vms\n3.0\t12.0\n", HEADER + "fast\t0:00:03\t100.0" + "\t-" * 7 + "\n",
                                  HEADER + "3.0\t0:00:03\tlots" + "\t-" * 7 + "\n",
                                  HEADER + "3.0\t0:00:03\t-1.0" + "\t-" * 7 + "\n"])
def test_malformed_benchmark_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "lap1.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=f"benchmark file {path} is malformed"):
        read_benchmarks([str(path)])


def test_unsampled_memory_is_skipped_but_never_the_peak(tmp_path, real_benchmarks):
    # a job faster than Snakemake's first sample has max_rss NA
    quick = tmp_path / "gather.tsv"
    quick.write_text(HEADER + "0.2\t0:00:00" + "\tNA" * 8 + "\n")
    both = read_benchmarks([str(quick), *real_benchmarks["fit"]])
    assert both["peak_rss_mb"] == read_benchmarks(real_benchmarks["fit"])["peak_rss_mb"] > 0
    # only unsampled jobs: not measured (None, shown as "-"), never a made-up number
    assert read_benchmarks([str(quick)]) == {"seconds": 0.2, "peak_rss_mb": None}
    # a method without a fit job (segmentation) costs no fit time
    assert read_benchmarks([]) == {"seconds": 0.0, "peak_rss_mb": None}
