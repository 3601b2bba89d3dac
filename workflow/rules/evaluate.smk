# Evaluation: community metrics of the generated sample and of two halves of the reference.


rule evaluate:
    input:
        samples="results/{dataset}/{model}/samples.h5",
        reference=lambda wc: raw_file(wc.dataset, "reference"),
        valid="results/{dataset}/data/reference.summary.json",
    output:
        metrics="results/{dataset}/{model}/evaluation/metrics.json",
        histograms="results/{dataset}/{model}/evaluation/histograms.npz",
        features="results/{dataset}/{model}/evaluation/features.parquet",
    params:
        stage=lambda wc: f"evaluate-{dataset(wc)['kind']}",
        geometry=lambda wc: ["--dataset", dataset(wc)["geometry"]] if dataset(wc)["kind"] == "showers" else [],
        settings=lambda wc: as_json(
            {"seed": config["seed"], **config["evaluation"][dataset(wc)["kind"]]}
            | ({"dataset": wc.dataset} if dataset(wc)["kind"] == "jets" else {})
        ),
        cache="results/cache/features",
        code=lambda wc: code_hash(f"pipelines.metrics.evaluate_{dataset(wc)['kind']}"),
    threads: 2
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/evaluate.log",
    shell:
        "python -m pipelines {params.stage:q} --reference={input.reference:q} --generated {input.samples:q} {params.geometry:q}"
        " --settings {params.settings:q} --cache-dir {params.cache:q}"
        " --out-metrics {output.metrics:q} --out-histograms {output.histograms:q}"
        " --out-features {output.features:q} 2> {log:q}"
