# Cutouts around targets and at random positions, from the tiles of either source.


rule cutouts:
    input:
        tiles=tile_files,
        truth=truth_files,
        targets="resources/targets.ecsv",
    output:
        galaxies="results/cutouts/galaxies.h5",
        randoms="results/cutouts/randoms.h5",
        # targets without a cutout and why (written by galsep.data.cutouts beside galaxies.h5)
        dropped="results/cutouts/dropped.ecsv",
    log:
        "logs/cutouts.log",
    benchmark:
        "logs/benchmark/cutouts.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        json=as_json(seed=config["seed"], cutouts=config["cutouts"]),
    shell:
        "python -m galsep cutouts --tiles {input.tiles} --truth {input.truth} --targets {input.targets}"
        " --galaxies {output.galaxies} --randoms {output.randoms} --params {params.json:q} > {log} 2>&1"
