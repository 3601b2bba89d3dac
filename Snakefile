# Raw data -> point clouds -> generative model -> samples -> metrics -> HTML report.
# Every rule calls one `python -m pipelines <stage>` entry point; the logic lives in pipelines/.
import sys

from snakemake.common.configfile import load_configfile
from snakemake.utils import min_version, validate

min_version("9.0")
sys.path.insert(0, workflow.basedir)
from pipelines.config_check import check_config  # noqa: E402 (no torch: a fast start)


configfile: "config.yaml"


# One line per mistake (key, problem, fix); a --configfile's data source replaces the default one.
check_config(
    config,
    f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
    layers=[load_configfile(f) for f in workflow.config_settings.configfiles] + [workflow.config_settings.config],
    files=", ".join(["config.yaml", *map(str, workflow.config_settings.configfiles)]),
)
validate(config, "workflow/schemas/config.schema.yaml")  # fills in the schema's defaults


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pointcloud.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Reports this run set out to remake carry a STALE banner until they are remade, and reports whose inputs
# changed without being remade get one at the end of the run (pipelines.report.stale).
from pipelines.report import stale  # noqa: E402

STALE_RUN = {"when": stale.utc_now(), "reports": []}


onstart:
    STALE_RUN["when"] = stale.utc_now()
    STALE_RUN["reports"] = [] if workflow.touch else sorted(  # --touch remakes nothing
        {str(f) for job in workflow.dag.needrun_jobs() for f in job.output if str(f).endswith(".html")}
    )
    stale.mark_started(STALE_RUN["reports"], STALE_RUN["when"])


onsuccess:
    stale.mark_outdated(final_outputs())


onerror:
    stale.mark_failed(STALE_RUN["reports"], STALE_RUN["when"])
    stale.mark_outdated(final_outputs())


rule all:
    input:
        final_outputs(),
    default_target: True
