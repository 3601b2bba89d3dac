# Export for fast simulation: a trained model's sampler as ONNX graphs, checked against torch and timed
# (`export: {enabled: true}` in the config; every run whose family can be exported, see export_input).


rule export:
    input:
        model="results/{dataset}/{model}/model.pt",
    output:
        graphs=multiext("results/{dataset}/{model}/export/", "shower.onnx", "shower_level.onnx", "points.onnx"),
        readme="results/{dataset}/{model}/export/README.md",
        info="results/{dataset}/{model}/export/export.json",
    params:
        out_dir=lambda wc: f"results/{wc.dataset}/{wc.model}/export",
        seed=config["seed"] + 5,
        settings=as_json(config["export"]["settings"]),
        code=code_hash("pipelines.export"),
    threads: 1  # as sample: the timings compare torch and ONNX Runtime on the same thread count
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/export.log",
    shell:
        "python -m pipelines export --model {input.model:q} --out-dir {params.out_dir:q} --seed {params.seed:q}"
        " --settings {params.settings:q} 2> {log:q}"
