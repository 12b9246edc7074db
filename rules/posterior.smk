# Separation of every galaxy: the catalogue's method and the peers of the comparison, in shards.
# The diffusion methods sample with the EM-learned priors; the others are fitted first.


rule fit_baseline:
    input:
        views=expand("results/views/{view}.h5", view=["randoms", "galaxies"]),
    output:
        "results/baselines/{method}.pt",
    log:
        "logs/baselines/{method}.log",
    benchmark:
        "logs/benchmark/baselines/{method}.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        json=lambda wildcards: method_params(wildcards.method),
    shell:
        "python -m galsep fit-baseline --method {wildcards.method} --views {input.views}"
        " --out {output} --params {params.json:q} --threads {threads} > {log} 2>&1"


rule posterior_shard:
    input:
        priors=lambda wildcards: method_priors(wildcards.method),
        model=lambda wildcards: method_model(wildcards.method),
        view="results/views/galaxies.h5",
    output:
        "results/posterior/{method}/shard{shard}.pt",
    log:
        "logs/posterior/{method}/shard{shard}.log",
    benchmark:
        "logs/benchmark/posterior/{method}/shard{shard}.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        json=lambda wildcards: method_params(wildcards.method),
        shards=lambda wildcards: method_shards(wildcards.method),
        model=lambda wildcards, input: f"--model {input.model}" if input.model else "",
    shell:
        "python -m galsep separate --method {wildcards.method} --priors {input.priors} {params.model}"
        " --view {input.view} --shard {wildcards.shard} --shards {params.shards} --out {output}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"
