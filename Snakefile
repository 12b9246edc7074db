# galsep: separate galaxies from contaminating light with diffusion priors learned by EM (DDPRISM).
# Read DESIGN.md for the stages and their files; config.yaml for every setting.
import sys
import time

from snakemake.utils import min_version, validate

from galsep.config import check, failure_report
from galsep.workflow import method_kinds

min_version("9.0")

RUN_START = time.time()  # logs written after this are this run's (the onerror report)


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
check(config)


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    tile=r"[A-Za-z0-9_.\-]+",
    view="|".join(VIEWS),
    chain="|".join(CHAINS),
    lap=r"\d+",
    shard=r"\d+",
    method="|".join(method_kinds()),


if MANIFOLD:

    # DDPRISM's 1-D manifold benchmark (workflow/configs/manifold.yaml), not the COSMOS field
    include: "rules/manifold.smk"

else:
    if SYNTHETIC:

        include: "rules/synthetic.smk"

    elif FILES:

        include: "rules/files.smk"

    else:

        include: "rules/mast.smk"
    include: "rules/data.smk"
    include: "rules/views.smk"
    include: "rules/prior.smk"
    include: "rules/posterior.smk"
    include: "rules/catalogue.smk"
    include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        manifold_outputs() if MANIFOLD else final_outputs(),


onerror:
    # Snakemake prints only "Error in rule X ... log: ..."; put each failed job's own error where the user looks
    try:
        report = failure_report(log, RUN_START)
    except Exception as err:  # the report must not hide Snakemake's own
        report = f"galsep: could not read the failed jobs' logs ({type(err).__name__}: {err}); see logs/"
    if report:
        print(report, file=sys.stderr)
