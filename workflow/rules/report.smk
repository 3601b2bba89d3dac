# Report: one self-contained HTML validation page per run, plots registered for `snakemake --report`.


rule report:
    input:
        unpack(export_input),
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
            labels=plot_labels,
        ),
    params:
        label="{dataset} / {model}",
        real=lambda wc: "" if is_embedded(wc.dataset) else "--real-data",
        export=lambda wc, input: ["--export", input.export] if "export" in input.keys() else [],
        settings=as_json(config["report"]["settings"]),
        code=code_hash("pipelines.report.html", extra_files=("report/templates/report.html",)),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/report.log",
    shell:
        "python -m pipelines report --metrics {input.metrics:q} --histograms {input.histograms:q} --labels {params.label:q}"
        " --training-curve {input.curve:q} --timing {input.timing:q} --training-summary {input.summary:q}"
        " --data-summaries {input.data_summaries:q} {params.real:q} {params.export:q} --settings {params.settings:q}"
        " --model {input.model:q} --out {output.html:q} --plots-dir {output.plots:q} 2> {log:q}"


rule metrics_table:
    input:
        "results/{dataset}/{model}/evaluation/metrics.json",
    output:
        parquet="results/{dataset}/{model}/evaluation/metrics.parquet",
        tsv=report(
            "results/{dataset}/{model}/evaluation/metrics.tsv",
            caption="../report/metrics.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"run": "{dataset} / {model}", "figure": "metrics", "plot": "metrics table"},
        ),
    params:
        code=code_hash("pipelines.report.metrics_table"),
    log:
        "logs/{dataset}/{model}/metrics_table.log",
    conda:
        "../envs/pipelines.yaml"
    shell:
        "python -m pipelines metrics-table --metrics {input:q} --out-parquet {output.parquet:q} --out-tsv {output.tsv:q} 2> {log:q}"


rule compare:
    input:
        metrics=lambda wc: compare_runs(wc, "evaluation/metrics.parquet"),
        features=lambda wc: compare_runs(wc, "evaluation/features.parquet"),
        summaries=lambda wc: compare_runs(wc, "training_summary.json"),
        timings=lambda wc: compare_runs(wc, "timing.json"),
    output:
        report(
            "results/{dataset}/comparison.html",
            caption="../report/comparison.rst",
            category="{dataset}",
            subcategory="comparison",
            labels={"run": "every run on {dataset}", "figure": "comparison", "plot": "comparison page"},
        ),
    params:
        models=lambda wc: dataset_models(wc.dataset),
        reports=lambda wc: compare_runs(wc, "report.html"),  # linked, not read: no input
        settings=as_json({k: v for k, v in config["report"]["settings"].items() if k != "title"}),
        code=code_hash("pipelines.report.compare", extra_files=("report/templates/comparison.html",)),
    log:
        "logs/{dataset}/compare.log",
    conda:
        "../envs/pipelines.yaml"
    shell:
        "python -m pipelines compare --dataset {wildcards.dataset:q} --models {params.models:q}"
        " --metrics-tables {input.metrics:q} --features {input.features:q}"
        " --training-summaries {input.summaries:q} --timings {input.timings:q} --reports {params.reports:q}"
        " --settings {params.settings:q} --out {output:q} 2> {log:q}"
