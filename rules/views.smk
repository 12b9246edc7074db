# Normalised contrastive and mixed views with per-sample observation operators.


rule view:
    input:
        galaxies="results/cutouts/galaxies.h5",
        randoms="results/cutouts/randoms.h5",
    output:
        "results/views/{view}.h5",
    log:
        "logs/views/{view}.log",
    benchmark:
        "logs/benchmark/views/{view}.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        json=as_json(seed=config["seed"], views=config["views"]),
    shell:
        "python -m galsep views --view {wildcards.view} --galaxies {input.galaxies}"
        " --randoms {input.randoms} --out {output} --params {params.json:q} > {log} 2>&1"
