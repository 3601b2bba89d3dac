# Point clouds: convert the training file (one point per hit voxel / particle), split, fit transforms.


rule convert:
    input:
        data=lambda wc: raw_file(wc.dataset, "train"),
        valid="results/{dataset}/data/train.summary.json",
    output:
        "results/{dataset}/clouds.h5",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        split=",".join(str(f) for f in config["preprocessing"]["split"]),
        seed=config["seed"],
        code=code_hash("pipelines.convert"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/convert.log",
    shell:
        "python -m pipelines convert --kind {params.kind:q} --dataset {params.geometry:q} --input={input.data:q}"
        " --split {params.split:q} --seed {params.seed:q} --out {output:q} 2> {log:q}"


rule fit_transforms:
    input:
        "results/{dataset}/clouds.h5",
    output:
        "results/{dataset}/transforms.json",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        seed=config["seed"],
        settings=as_json({"max_fit_points": config["preprocessing"]["max_fit_points"]}),
        code=code_hash("pipelines.transforms"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/fit_transforms.log",
    shell:
        "python -m pipelines fit-transforms --clouds {input:q} --kind {params.kind:q} --dataset {params.geometry:q}"
        " --seed {params.seed:q} --settings {params.settings:q} --out {output:q} 2> {log:q}"
