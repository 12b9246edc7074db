# The Zarr catalogue of separated galaxies (by config["method"]), and its published form.


rule catalogue:
    input:
        shards=separation_shards(METHOD),
        cutouts="results/cutouts/galaxies.h5",
        weights=method_weights(METHOD),
    output:
        directory("results/catalogue.zarr"),
    log:
        "logs/catalogue.log",
    benchmark:
        "logs/benchmark/catalogue.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        json=as_json(config=catalogue_config()),
        method=METHOD,
    shell:
        "python -m galsep catalogue --method {params.method} --weights {input.weights}"
        " --cutouts {input.cutouts} --out {output} --params {params.json:q} {input.shards} > {log} 2>&1"


rule publish:
    input:
        catalogue="results/catalogue.zarr",
        metrics="results/metrics.json" if SYNTHETIC else [],
    output:
        directory("results/publish"),
    log:
        "logs/publish.log",
    conda:
        "../envs/galsep.yaml"
    params:
        json=as_json(config=catalogue_config()),
    shell:
        "python -m galsep publish --catalogue {input.catalogue} --metrics {input.metrics}"
        " --outdir {output} --params {params.json:q} > {log} 2>&1"
