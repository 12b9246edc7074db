# Separation quality against the synthetic truth, and the report's figures.


rule evaluate:
    input:
        catalogue="results/catalogue.zarr",
        randoms="results/cutouts/randoms.h5",
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
        " --out {output} --params {params.json:q} > {log} 2>&1"


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
