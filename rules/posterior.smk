# Final joint posterior of every galaxy, in shards.


rule posterior_shard:
    input:
        galaxy_prior=final_prior("galaxy"),
        random_prior=final_prior("random"),
        view="results/views/galaxies.h5",
    output:
        "results/posterior/shard{shard}.pt",
    log:
        "logs/posterior/shard{shard}.log",
    benchmark:
        "logs/benchmark/posterior/shard{shard}.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        json=as_json(
            seed=config["seed"],
            device=config["device"],
            diffusion=config["diffusion"],
            clip=config["views"]["clip"],
            posterior={k: config["posterior"][k] for k in ("samples", "sampler")},
        ),
        shards=config["posterior"]["shards"],
    shell:
        "python -m galsep posterior-shard --galaxy-prior {input.galaxy_prior}"
        " --random-prior {input.random_prior} --view {input.view} --shard {wildcards.shard}"
        " --shards {params.shards} --out {output} --params {params.json:q} --threads {threads} > {log} 2>&1"
