# Real COSMOS data (source: mast): HST/ACS F814W drizzled tiles from MAST, Galaxy Zoo: Hubble targets.
# Query once (a checkpoint: the tile list is known only afterwards), one download job per tile, then
# the targets. See docs/real-data.md.


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
        proposal_ids=MAST["proposal_ids"],
        filter=MAST["filter"],
        provenance=MAST["provenance"],
        instrument=MAST["instrument"],
        product=MAST["product"],
        exclude=MAST["exclude_tiles"],
        tiles_limit=MAST["tiles_limit"] or 0,
        match_radius=MAST["match_radius"],
        timeout=MAST["download"]["timeout"],
    shell:
        "python -m galsep.sources.mast query --output {output} --proposal-ids {params.proposal_ids}"
        " --filter {params.filter:q} --provenance {params.provenance:q}"
        " --instrument {params.instrument:q} --product {params.product:q}"
        " --exclude {params.exclude:q} --tiles-limit {params.tiles_limit}"
        " --match-radius {params.match_radius} --timeout {params.timeout} > {log} 2>&1"


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
        uri=lambda wildcards: _product(wildcards.tile, "dataURI"),
        size=lambda wildcards: _product(wildcards.tile, "size"),
        cache_dir=MAST["download"]["cache_dir"],
        retries=MAST["download"]["retries"],
        backoff=MAST["download"]["backoff"],
        timeout=MAST["download"]["timeout"],
    shell:
        "python -m galsep.sources.mast download --uri {params.uri:q} --output {output} --size {params.size}"
        " --cache-dir {params.cache_dir:q} --retries {params.retries} --backoff {params.backoff}"
        " --timeout {params.timeout} > {log} 2>&1"


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
        vizier=(
            MAST["gzh"]["vizier_catalog"] if MAST["gzh"]["source"] == "vizier" else ""
        ),
        id=MAST["gzh"]["id_column"],
        ra=MAST["gzh"]["ra_column"],
        dec=MAST["gzh"]["dec_column"],
        imaging=MAST["gzh"]["imaging_column"],
        imaging_value=MAST["gzh"]["imaging_value"],
        artifact=MAST["gzh"]["artifact_column"],
        mag=MAST["gzh"]["mag_column"] or "",
        keep=MAST["gzh"]["keep_columns"],
        edge_margin=MAST["edge_margin"],
        timeout=MAST["download"]["timeout"],
    shell:
        "python -m galsep.sources.mast targets --tiles {input.tiles} --output {output}"
        " --catalogues {input.catalogues:q} --vizier {params.vizier:q} --id-column {params.id:q}"
        " --ra-column {params.ra:q} --dec-column {params.dec:q} --imaging-column {params.imaging:q}"
        " --imaging-value {params.imaging_value:q} --artifact-column {params.artifact:q}"
        " --mag-column {params.mag:q} --keep-columns {params.keep:q} --edge-margin {params.edge_margin}"
        " --timeout {params.timeout} > {log} 2>&1"
