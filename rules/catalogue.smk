# The Zarr catalogue of separated galaxies, and its published form.


rule catalogue:
    input:
        shards=expand(
            "results/posterior/shard{shard}.pt",
            shard=range(config["posterior"]["shards"]),
        ),
        cutouts="results/cutouts/galaxies.h5",
        galaxy_prior=final_prior("galaxy"),
        random_prior=final_prior("random"),
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
        json=as_json(config=config),
    shell:
        "python -m galsep catalogue --galaxy-prior {input.galaxy_prior} --random-prior {input.random_prior}"
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
        json=as_json(config=config),
    shell:
        "python -m galsep publish --catalogue {input.catalogue} --metrics {input.metrics}"
        " --outdir {output} --params {params.json:q} > {log} 2>&1"
