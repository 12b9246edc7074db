# Synthetic COSMOS field made with GalSim (source: synthetic): tiles, truth and targets, one job a tile.


rule synthetic_tile:
    output:
        tile="resources/tiles/{tile}.fits",
        truth="resources/truth/{tile}.h5",
        targets="resources/targets/{tile}.ecsv",
    log:
        "logs/synthetic_tile/{tile}.log",
    benchmark:
        "logs/benchmark/synthetic_tile/{tile}.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        json=lambda wildcards: as_json(
            index=tile_names().index(wildcards.tile),
            seed=config["seed"],
            synthetic=config["synthetic"] | {"cutout_size": config["cutouts"]["size"]},
        ),
    shell:
        "python -m galsep synthetic-tile --tile {wildcards.tile} --tile-out {output.tile}"
        " --truth-out {output.truth} --targets-out {output.targets} --params {params.json:q} > {log} 2>&1"


rule targets:
    input:
        expand("resources/targets/{tile}.ecsv", tile=tile_names()),
    output:
        "resources/targets.ecsv",
    log:
        "logs/targets.log",
    conda:
        "../envs/galsep.yaml"
    shell:
        "python -m galsep merge-targets --out {output} {input} > {log} 2>&1"
