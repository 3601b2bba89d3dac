# Report: one self-contained HTML validation page per run, plots registered for `snakemake --report`.


rule report:
    input:
        model="results/{dataset}/{model}/model.pt",
        metrics="results/{dataset}/{model}/evaluation/metrics.json",
        histograms="results/{dataset}/{model}/evaluation/histograms.npz",
        curve="results/{dataset}/{model}/training_curve.csv",
        timing="results/{dataset}/{model}/timing.json",
        summary="results/{dataset}/{model}/training_summary.json",
        data_summaries=expand("results/{{dataset}}/data/{role}.summary.json", role=("train", "reference")),
    output:
        html="results/{dataset}/{model}/report.html",
        plots=report(
            directory("results/{dataset}/{model}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    params:
        label="{dataset} / {model}",
        real=lambda wc: "" if is_embedded(wc.dataset) else "--real-data",
        settings=as_json(config["report"]["settings"]),
        code=code_hash("pipelines.report.html", extra_files=("report/templates/report.html",)),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/report.log",
    shell:
        "python -m pipelines report --metrics {input.metrics:q} --histograms {input.histograms:q} --labels {params.label:q}"
        " --training-curve {input.curve:q} --timing {input.timing:q} --training-summary {input.summary:q}"
        " --data-summaries {input.data_summaries:q} {params.real:q} --settings {params.settings:q}"
        " --model {input.model:q} --out {output.html:q} --plots-dir {output.plots:q} 2> {log:q}"
