# DDPRISM's 1-D manifold experiments (paper table 1): datasets, EM chains, draws and metrics, the table.
# Run with `snakemake --cores all --configfile workflow/configs/manifold.yaml` (docs/manifold.md); the
# file lists and each job's settings come from galsep.manifold.workflow.Plan.
from galsep.manifold.settings import (
    DATASET_PATTERN,
    EM_METHODS,
    SETTING_PATTERN,
    methods,
)
from galsep.manifold.workflow import Plan

validate(config["manifold"], "../workflow/schemas/manifold.schema.yaml")
MF = config["manifold"]
PLAN = Plan(config)
manifold_outputs = PLAN.outputs
MF_WILDCARDS = dict(
    dataset=DATASET_PATTERN,
    setting=SETTING_PATTERN,
    approach="|".join(methods()),
    stage=r"\d+",
)
MF_FIT_WILDCARDS = MF_WILDCARDS | dict(approach="|".join(EM_METHODS))


rule manifold_data:
    output:
        "results/manifold/data/{dataset}.pt",
    log:
        "logs/manifold/data/{dataset}.log",
    benchmark:
        "logs/benchmark/manifold/data/{dataset}.tsv"
    wildcard_constraints:
        **MF_WILDCARDS,
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=MF["resources"]["mem_mb"],
        runtime=MF["resources"]["evaluate_runtime"],
    params:
        json=as_json(**PLAN.data_params()),
    shell:
        "python -m galsep.manifold data --dataset {wildcards.dataset} --out {output}"
        " --params {params.json:q} > {log} 2>&1"


rule manifold_fit:
    input:
        data="results/manifold/data/{dataset}.pt",
        previous=lambda wildcards: PLAN.previous(
            wildcards.dataset, wildcards.approach, wildcards.stage
        ),
    output:
        "results/manifold/{dataset}/{approach}/stage{stage}.pt",
    log:
        "logs/manifold/{dataset}/{approach}/stage{stage}.log",
    benchmark:
        "logs/benchmark/manifold/{dataset}/{approach}/stage{stage}.tsv"
    wildcard_constraints:
        **MF_FIT_WILDCARDS,
    # the EM chains are the long path: start them before the evaluations
    priority: 10
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MF["resources"]["mem_mb"],
        runtime=MF["resources"]["fit_runtime"],
    params:
        json=lambda wildcards: as_json(
            **PLAN.fit_params(wildcards.dataset, wildcards.approach)
        ),
        previous=lambda wildcards, input: (
            f"--previous {input.previous[0]}" if input.previous else ""
        ),
    shell:
        "python -m galsep.manifold fit --dataset {wildcards.dataset} --method {wildcards.approach}"
        " --stage {wildcards.stage} --data {input.data} {params.previous} --out {output}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"


rule manifold_evaluate:
    input:
        data=lambda wildcards: PLAN.data_file(wildcards.setting),
        stages=lambda wildcards: PLAN.chain(wildcards.setting, wildcards.approach),
    output:
        draws="results/manifold/{setting}/{approach}/draws.pt",
        metrics="results/manifold/{setting}/{approach}/metrics.json",
    log:
        "logs/manifold/{setting}/{approach}/evaluate.log",
    benchmark:
        "logs/benchmark/manifold/{setting}/{approach}/evaluate.tsv"
    wildcard_constraints:
        **MF_WILDCARDS,
    conda:
        "../envs/galsep.yaml"
    threads: config["threads"]
    resources:
        mem_mb=MF["resources"]["mem_mb"],
        runtime=MF["resources"]["evaluate_runtime"],
    params:
        json=lambda wildcards: as_json(
            **PLAN.evaluate_params(wildcards.setting, wildcards.approach)
        ),
    shell:
        "python -m galsep.manifold evaluate --setting {wildcards.setting} --method {wildcards.approach}"
        " --data {input.data} --stages {input.stages} --draws {output.draws} --out {output.metrics}"
        " --params {params.json:q} --threads {threads} > {log} 2>&1"


rule manifold_table:
    input:
        PLAN.metrics_files(),
    output:
        json=report(
            "results/manifold/table.json",
            caption="../workflow/report/manifold_table.rst",
            category="Manifold",
        ),
        md=report(
            "results/manifold/table.md",
            caption="../workflow/report/manifold_table.rst",
            category="Manifold",
        ),
    log:
        "logs/manifold/table.log",
    conda:
        "../envs/galsep.yaml"
    params:
        json=as_json(**PLAN.table_params()),
    shell:
        "python -m galsep.manifold table --json {output.json} --md {output.md}"
        " --params {params.json:q} {input} > {log} 2>&1"
