# Training: the multiplicity model p(n | E) and the generative model of a family (GPU rule on clusters).
# A model's training setting gpus: N > 1 asks for N GPUs (cpus_per_gpu threads each) and starts N
# data-parallel processes with torchrun on the job's node (gloo processes on a CPU-only machine), with
# 8 GB of memory per process (times the attempt).
# Checkpoints live in checkpoints/, which is no declared output: a retried or requeued job resumes.


rule train_multiplicity:
    input:
        "results/{dataset}/clouds.h5",
    output:
        model="results/{dataset}/{model}/multiplicity.json",
        plot="results/{dataset}/{model}/multiplicity.png",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        settings=lambda wc: as_json({"seed": config["seed"], **MODELS[wc.model].get("multiplicity", {})}),
        code=code_hash("pipelines.models.multiplicity"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/train_multiplicity.log",
    shell:
        "python -m pipelines train-multiplicity --clouds {input:q} --kind {params.kind:q} --dataset {params.geometry:q}"
        " --settings {params.settings:q} --out {output.model:q} --out-plot {output.plot:q} 2> {log:q}"


rule train:
    input:
        clouds="results/{dataset}/clouds.h5",
        transforms="results/{dataset}/transforms.json",
    output:
        model="results/{dataset}/{model}/model.pt",
        curve="results/{dataset}/{model}/training_curve.csv",
        summary="results/{dataset}/{model}/training_summary.json",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        family=lambda wc: MODELS[wc.model]["family"],
        geometry=lambda wc: dataset(wc)["geometry"],
        settings=lambda wc: as_json(model_settings(wc.model)),
        checkpoints="checkpoints/{dataset}/{model}",
        code=code_hash("pipelines.train", "pipelines.models.families"),
        launch=lambda wc: train_launcher(wc.model),
    threads: 1
    resources:
        gpu=lambda wc: train_gpus(wc.model),
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=lambda wc, attempt: 8000 * attempt * train_gpus(wc.model),  # 8 GB per process
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/train.log",
    shell:
        "PIPELINES_NUM_THREADS={threads} {params.launch} train --clouds {input.clouds:q} --transforms {input.transforms:q}"
        " --kind {params.kind:q} --family {params.family:q} --dataset {params.geometry:q}"
        " --settings {params.settings:q} --checkpoint-dir {params.checkpoints:q}"
        " --code-version {params.code:q} --restart-on-mismatch"
        " --out-model {output.model:q} --out-curve {output.curve:q} --out-summary {output.summary:q} 2> {log:q}"
