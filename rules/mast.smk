# Real COSMOS data (source: mast): HST/ACS F814W drizzled tiles from MAST, Galaxy Zoo: Hubble targets.
# Query once (a checkpoint: the tile list is known only afterwards), one download job per tile, then
# the targets. See docs/real-data.md; the stages are galsep.sources.mast's (python -m galsep.sources.mast).


checkpoint mast_products:
    output:
        MAST_PRODUCTS,
    log:
        "logs/mast/products.log",
    benchmark:
        "logs/benchmark/mast/products.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=1000,
        runtime=30,
        mast_connections=1,
    params:
        # only the query's own keys: changing e.g. mast.gzh must not query MAST again
        json=as_json(
            proposal_ids=MAST["proposal_ids"],
            filter=MAST["filter"],
            provenance=MAST["provenance"],
            instrument=MAST["instrument"],
            product=MAST["product"],
            exclude_tiles=MAST["exclude_tiles"],
            tiles_limit=MAST["tiles_limit"],
            match_radius=MAST["match_radius"],
            timeout=MAST["download"]["timeout"],
        ),
    shell:
        "python -m galsep.sources.mast query --out {output} --params {params.json:q} > {log} 2>&1"


rule mast_tile:
    input:
        # the products table is rewritten when e.g. tiles_limit changes; a tile must not be fetched
        # again for that, only when its own product (params) changes
        ancient(MAST_PRODUCTS),
    output:
        "resources/tiles/{tile}.fits",
    log:
        "logs/mast/download/{tile}.log",
    benchmark:
        "logs/benchmark/mast/download/{tile}.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=1000,
        runtime=120,
        mast_connections=1,
    params:
        json=mast_download_params,
    shell:
        "python -m galsep.sources.mast download --out {output} --params {params.json:q} > {log} 2>&1"


rule mast_targets:
    input:
        tiles=lambda wildcards: expand("resources/tiles/{tile}.fits", tile=tile_names()),
        catalogues=(
            [] if MAST["gzh"]["source"] == "vizier" else MAST["gzh"]["catalogues"]
        ),
    output:
        "resources/targets.ecsv",
    log:
        "logs/mast/targets.log",
    benchmark:
        "logs/benchmark/mast/targets.tsv"
    conda:
        "../envs/galsep.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        json=as_json(
            gzh=MAST["gzh"],
            edge_margin=MAST["edge_margin"],
            timeout=MAST["download"]["timeout"],
        ),
    shell:
        "python -m galsep.sources.mast targets --tiles {input.tiles} --catalogues {input.catalogues:q}"
        " --out {output} --params {params.json:q} > {log} 2>&1"
