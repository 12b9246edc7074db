# Separation quality against the synthetic truth, and the report's figures.


rule evaluate:
    input:
        catalogue="results/catalogue.zarr",
        randoms="results/cutouts/randoms.h5",
        targets="resources/targets.ecsv",
    output:
        report(
            "results/metrics.json",
            caption="../workflow/report/metrics.rst",
            category="Metrics",
        ),
    log:
        "logs/evaluate.log",
    conda:
        "../envs/galsep.yaml"
    params:
        json=as_json(views=config["views"]),
    shell:
        "python -m galsep evaluate --catalogue {input.catalogue} --randoms {input.randoms}"
        " --targets {input.targets} --out {output} --params {params.json:q} > {log} 2>&1"


rule figures:
    input:
        catalogue="results/catalogue.zarr",
        metrics="results/metrics.json",
        laps=[prior_file(c, k) for c in CHAINS for k in range(1, LAPS + 1)],
        samples=[
            f"results/prior/{c}/samples{k}.pt" for c in CHAINS for k in range(LAPS)
        ],
    output:
        posterior=report(
            "results/figures/posterior.png",
            caption="../workflow/report/posterior.rst",
            category="Separation",
        ),
        laps=report(
            "results/figures/em_laps.png",
            caption="../workflow/report/em_laps.rst",
            category="EM",
        ),
        loss=report(
            "results/figures/loss.png",
            caption="../workflow/report/loss.rst",
            category="EM",
        ),
        metrics=report(
            "results/figures/metrics.png",
            caption="../workflow/report/metrics.rst",
            category="Metrics",
        ),
    log:
        "logs/figures.log",
    conda:
        "../envs/galsep.yaml"
    shell:
        "python -m galsep figures --catalogue {input.catalogue} --metrics {input.metrics}"
        " --laps {input.laps} --samples {input.samples} --outdir $(dirname {output.posterior}) > {log} 2>&1"


rule compare_method:
    input:
        shards=lambda wildcards: separation_shards(wildcards.method),
        cutouts="results/cutouts/galaxies.h5",
        randoms="results/cutouts/randoms.h5",
        targets="resources/targets.ecsv",
    output:
        "results/compare/{method}.json",
    log:
        "logs/compare/{method}.log",
    benchmark:
        "logs/benchmark/compare/{method}.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        json=as_json(seed=config["seed"], views=config["views"]),
    shell:
        "python -m galsep compare-method --method {wildcards.method} --cutouts {input.cutouts}"
        " --randoms {input.randoms} --targets {input.targets} --out {output} --params {params.json:q}"
        " {input.shards} > {log} 2>&1"


rule compare:
    input:
        metrics=expand("results/compare/{method}.json", method=COMPARE),
        # the table's cost columns: a missing benchmark file makes its job rerun, never a blank cell
        benchmarks=list(
            dict.fromkeys(
                f
                for m in COMPARE
                for files in method_benchmarks(m).values()
                for f in files
            )
        ),
    output:
        table="results/compare/table.json",
        markdown="results/compare/table.md",
        figure=report(
            "results/compare/compare.png",
            caption="../workflow/report/compare.rst",
            category="Comparison",
        ),
    log:
        "logs/compare/table.log",
    conda:
        "../envs/galsep.yaml"
    params:
        json=lambda wildcards: as_json(
            benchmarks={m: method_benchmarks(m) for m in COMPARE}
        ),
    shell:
        "python -m galsep compare --outdir $(dirname {output.table}) --params {params.json:q}"
        " {input.metrics} > {log} 2>&1"
