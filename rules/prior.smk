# EM of the priors, per chain: Gaussian start, then one job per diffusion lap and per E-step shard.


rule prior_gaussian:
    input:
        views=chain_views,
        frozen=frozen_priors,
    output:
        prior="results/prior/{chain}/gaussian.pt",
        samples="results/prior/{chain}/samples0.pt",
    log:
        "logs/prior/{chain}/gaussian.log",
    benchmark:
        "logs/benchmark/prior/{chain}/gaussian.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["serial_threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        json=lambda wildcards: chain_params(
            em={
                k: config["em"][k]
                for k in ("gaussian_laps", "gaussian_rank", "sampler")
            }
        ),
    shell:
        "python -m galsep prior-gaussian --chain {wildcards.chain} --views {input.views}"
        " --frozen {input.frozen} --out {output.prior} --samples-out {output.samples}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"


rule prior_lap:
    input:
        previous=lambda wildcards: prior_file(wildcards.chain, int(wildcards.lap) - 1),
        samples=lambda wildcards: f"results/prior/{wildcards.chain}/samples{int(wildcards.lap) - 1}.pt",
    output:
        "results/prior/{chain}/lap{lap}.pt",
    log:
        "logs/prior/{chain}/lap{lap}.log",
    benchmark:
        "logs/benchmark/prior/{chain}/lap{lap}.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["serial_threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        json=chain_params(
            network=config["network"], em={"train": config["em"]["train"]}
        ),
    shell:
        "python -m galsep prior-lap --chain {wildcards.chain} --lap {wildcards.lap}"
        " --previous {input.previous} --samples {input.samples} --out {output}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"


rule estep_shard:
    input:
        prior="results/prior/{chain}/lap{lap}.pt",
        frozen=frozen_priors,
        views=chain_views,
    output:
        "results/prior/{chain}/estep{lap}/shard{shard}.pt",
    log:
        "logs/prior/{chain}/estep{lap}/shard{shard}.log",
    benchmark:
        "logs/benchmark/prior/{chain}/estep{lap}/shard{shard}.tsv"
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        json=chain_params(em={"sampler": config["em"]["sampler"]}),
        shards=config["em"]["shards"],
    shell:
        "python -m galsep estep-shard --chain {wildcards.chain} --lap {wildcards.lap}"
        " --prior {input.prior} --frozen {input.frozen} --views {input.views}"
        " --shard {wildcards.shard} --shards {params.shards} --out {output}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"


rule gather_estep:
    input:
        expand(
            "results/prior/{{chain}}/estep{{lap}}/shard{shard}.pt",
            shard=range(config["em"]["shards"]),
        ),
    output:
        "results/prior/{chain}/samples{lap}.pt",
    log:
        "logs/prior/{chain}/gather{lap}.log",
    # samples0.pt is prior_gaussian's: E-steps gather from lap 1 on
    wildcard_constraints:
        lap=r"[1-9]\d*",
    conda:
        "../envs/galsep.yaml"
    params:
        json=chain_params(),
    shell:
        "python -m galsep gather-estep --chain {wildcards.chain} --lap {wildcards.lap} --out {output}"
        " --params {params.json:q} {input} > {log} 2>&1"
