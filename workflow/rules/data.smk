# Data: generate the embedded default (GFlash showers, Pythia 8 jets) or validate the user's files.


rule generate_showers:
    output:
        "results/{dataset}/data/{role}.h5",
    wildcard_constraints:
        dataset="|".join(n for n, d in DATASETS.items() if d["kind"] == "showers" and "embedded" in d["source"]) or "^$",
    params:
        n=lambda wc: dataset(wc)["source"]["embedded"][f"n_{wc.role}"],
        geometry=lambda wc: dataset(wc)["geometry"],
        seed=role_seed,
        settings=lambda wc: as_json(dataset(wc)["source"]["embedded"]["settings"]),
        code=code_hash("pipelines.generate.gflash"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/generate_{role}.log",
    shell:
        "python -m pipelines generate-showers --dataset {params.geometry:q} --n-showers {params.n:q} --seed {params.seed:q}"
        " --settings {params.settings:q} --out {output:q} 2> {log:q}"


rule generate_jets:
    output:
        "results/{dataset}/data/{role}.h5",
    wildcard_constraints:
        dataset="|".join(n for n, d in DATASETS.items() if d["kind"] == "jets" and "embedded" in d["source"]) or "^$",
    params:
        n=lambda wc: dataset(wc)["source"]["embedded"][f"n_{wc.role}"],
        particles=lambda wc: dataset(wc)["geometry"],
        jet_type=jet_types_arg,
        seed=role_seed,
        settings=lambda wc: as_json(dataset(wc)["source"]["embedded"]["settings"]),
        code=code_hash("pipelines.generate.pythia_jets"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/generate_{role}.log",
    shell:
        "python -m pipelines generate-jets --jet-type {params.jet_type:q} --n-jets {params.n:q} --n-particles {params.particles:q}"
        " --seed {params.seed:q} --settings {params.settings:q} --out {output:q} 2> {log:q}"


rule merge_jets:
    input:
        lambda wc: dataset(wc)["source"]["files"][wc.role],
    output:
        "results/{dataset}/data/{role}.h5",
    wildcard_constraints:
        dataset="|".join(n for n in DATASETS if DATASETS[n]["kind"] == "jets" and is_merged(n)) or "^$",
    params:
        jet_type=jet_types_arg,
        seed=role_seed,
        code=code_hash("pipelines.merge_jets"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/merge_{role}.log",
    shell:
        "python -m pipelines merge-jets --jet-type {params.jet_type:q} --input {input:q} --seed {params.seed:q}"
        " --out {output:q} 2> {log:q}"


rule validate_data:
    input:
        lambda wc: raw_file(wc.dataset, wc.role),
    output:
        "results/{dataset}/data/{role}.summary.json",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        code=code_hash("pipelines.validate"),
    conda:
        "../envs/pipelines.yaml"
    log:
        "logs/{dataset}/validate_{role}.log",
    shell:
        "python -m pipelines validate --kind {params.kind:q} --dataset {params.geometry:q} --input={input:q} --out {output:q} 2> {log:q}"
