# galsep: separate galaxies from contaminating light with diffusion priors learned by EM (DDPRISM).
# Read DESIGN.md for the stages and their files; config.yaml for every setting.
from snakemake.utils import min_version, validate

from galsep.config import check

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
check(config)


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    tile=r"[A-Za-z0-9_.\-]+",
    view="|".join(VIEWS),


if SYNTHETIC:

    include: "rules/synthetic.smk"

else:

    include: "rules/mast.smk"


include: "rules/data.smk"
include: "rules/views.smk"


rule all:
    default_target: True
    input:
        expand("results/views/{view}.h5", view=VIEWS),
