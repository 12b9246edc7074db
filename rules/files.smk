# Your own images (source: files): each drizzled image of files.directory becomes a tile of the
# workflow's contract, then the target table is assigned to the tiles. The stages are
# galsep.sources.files's (python -m galsep.sources.files); README "Your own images".


rule files_tile:
    input:
        unpack(files_image),
    output:
        "resources/tiles/{tile}.fits",
    log:
        "logs/files/tile/{tile}.log",
    benchmark:
        "logs/benchmark/files/tile/{tile}.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        # only how an image is read: the target columns must not remake the tiles
        json=as_json(
            sci_extension=config["files"]["sci_extension"],
            weight_extension=config["files"]["weight_extension"],
            weight_type=config["files"]["weight_type"],
            bunit=config["files"]["bunit"],
        ),
    shell:
        "python -m galsep.sources.files tile --image {input.image:q} --weight={input.weight:q}"
        " --out {output} --params {params.json:q} > {log} 2>&1"


rule files_targets:
    input:
        tiles=tile_files,
        table=FILES_TARGETS,
    output:
        targets="resources/targets.ecsv",
        # the targets on no observed pixel of any image (an error with cutouts.on_drop: error)
        outside="resources/files/outside.ecsv",
    log:
        "logs/files/targets.log",
    benchmark:
        "logs/benchmark/files/targets.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        json=as_json(
            id_column=config["files"]["id_column"],
            ra_column=config["files"]["ra_column"],
            dec_column=config["files"]["dec_column"],
            on_drop=config["cutouts"]["on_drop"],
            # beyond half a cutout from the coverage edge, overlapping images are equally good
            edge_cap=config["cutouts"]["size"] // 2 + 1,
        ),
    shell:
        "python -m galsep.sources.files targets --tiles {input.tiles} --table {input.table:q}"
        " --out {output.targets} --outside {output.outside} --params {params.json:q} > {log} 2>&1"
