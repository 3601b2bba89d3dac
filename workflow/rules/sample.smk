# Generation: samples in the input format (CaloChallenge showers, JetNet jets) plus timings.


rule sample:
    input:
        unpack(multiplicity_input),
        model="results/{dataset}/{model}/model.pt",
        transforms="results/{dataset}/transforms.json",
        reference=lambda wc: raw_file(wc.dataset, "reference"),
        valid="results/{dataset}/data/reference.summary.json",
    output:
        samples="results/{dataset}/{model}/samples.h5",
        timing="results/{dataset}/{model}/timing.json",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        n=config["sampling"]["n_samples"],
        seed=config["seed"] + 2,
        settings=as_json(config["sampling"]["settings"]),
        multiplicity=lambda wc, input: ["--multiplicity", input.multiplicity] if "multiplicity" in input.keys() else [],
        code=code_hash("pipelines.sample", "pipelines.models.families"),
    threads: 1  # as train: small ops on a shared 2-core machine are fastest on one thread
    resources:
        gpu=1,
        cpus_per_gpu=lambda wc, threads: threads,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/{model}/sample.log",
    shell:
        "python -m pipelines sample --model {input.model:q} {params.multiplicity:q} --transforms {input.transforms:q}"
        " --reference={input.reference:q} --kind {params.kind:q} --dataset {params.geometry:q} --n-samples {params.n:q}"
        " --seed {params.seed:q} --settings {params.settings:q} --out {output.samples:q}"
        " --out-timing {output.timing:q} 2> {log:q}"
