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
    log:
        "logs/{dataset}/generate_{role}.log",
    shell:
        "{PY} generate-showers --dataset {params.geometry} --n-showers {params.n} --seed {params.seed}"
        " --settings '{params.settings}' --out {output} 2> {log}"


rule generate_jets:
    output:
        "results/{dataset}/data/{role}.h5",
    wildcard_constraints:
        dataset="|".join(n for n, d in DATASETS.items() if d["kind"] == "jets" and "embedded" in d["source"]) or "^$",
    params:
        n=lambda wc: dataset(wc)["source"]["embedded"][f"n_{wc.role}"],
        particles=lambda wc: dataset(wc)["geometry"],
        jet_type=lambda wc: dataset(wc)["jet_type"],
        seed=role_seed,
        settings=lambda wc: as_json(dataset(wc)["source"]["embedded"]["settings"]),
        code=code_hash("pipelines.generate.pythia_jets"),
    log:
        "logs/{dataset}/generate_{role}.log",
    shell:
        "{PY} generate-jets --jet-type {params.jet_type} --n-jets {params.n} --n-particles {params.particles}"
        " --seed {params.seed} --settings '{params.settings}' --out {output} 2> {log}"


rule validate_data:
    input:
        lambda wc: raw_file(wc.dataset, wc.role),
    output:
        "results/{dataset}/data/{role}.summary.json",
    params:
        kind=lambda wc: dataset(wc)["kind"],
        geometry=lambda wc: dataset(wc)["geometry"],
        code=code_hash("pipelines.validate"),
    log:
        "logs/{dataset}/validate_{role}.log",
    shell:
        "{PY} validate --kind {params.kind} --dataset {params.geometry} --input {input} --out {output} 2> {log}"
