"""Golden values: the jet metrics against jetnet 0.2.5 and energyflow 1.4.0 on a committed fixture.

Fixture: tests/data/golden_jets.npz (200 "real" and 200 "generated" jets, see make_golden_fixtures.py).
The values below were computed once, in a separate environment (jetnet 0.2.5, EnergyFlow 1.4.0,
numpy 1.26.4, scipy 1.17.1, torch 2.13.0 CPU), from the fixture converted to float64, with:

    from jetnet.evaluation import gen_metrics as gm
    jets = pf[..., :3]; mask = pf[..., 3]
    gm.rng = np.random.default_rng(42)  # reset before each of the three W1 calls
    gm.w1m(real, gen, num_eval_samples=200, num_batches=5)
    gm.w1p(real, gen, mask_real, mask_gen, exclude_zeros=True, num_eval_samples=200, num_batches=5)
    gm.w1efp(real, gen, num_eval_samples=200, num_batches=5, efp_jobs=1)
    f = gm.get_fpd_kpd_jet_features(jets, efp_jobs=1)  # energyflow EFPSet("d<=4"), normed=None
    gm.fpd(f_real, f_gen, min_samples=100, max_samples=200, num_batches=20, num_points=10, seed=42)
    gm.kpd(f_real, f_gen, num_batches=10, batch_size=200, seed=42)
    energyflow.EFPSet("d<=4", measure="hadr", beta=1, normed=None, coords="ptyphim")
        .batch_compute(real[:, :, [2, 0, 1]], n_jobs=1)  # and normed=True for the option
    gm.rng = np.random.default_rng(42)  # reset before each of the calls below
    gm.cov_mmd(real, gen, num_eval_samples=100, num_batches=10)  # EMDs by energyflow / wasserstein 1.1.0
    [gm.cov_mmd(real, gen, num_eval_samples=100, num_batches=1) for _ in range(10)]  # per batch
    gm.cov_mmd(real, real, num_eval_samples=100, num_batches=2)  # the sample against itself
    energyflow.emd.emds(gen[:5, :, [2, 0, 1]], real[:5, :, [2, 0, 1]])  # R = 1, beta = 1, norm=False
    pt = jetnet.utils.jet_features(real)["pt"]  # and of gen; scipy.stats.wasserstein_distance over the
    # batches of w1m: 5 x (gm.rng.choice(200, size=200) for real, then for gen)

jetnet draws its W1 and COV/MMD batches with ``rng.choice`` from its module generator, FPD draws from
``default_rng(seed)`` and KPD batch i from ``default_rng(seed + 1000 i)``: with the same seed the project
draws the same jets, so the values agree to rounding (FPD to the tolerance of its least-squares fit).
EFP graphs are matched to the project's columns by graph isomorphism; the 36 EFPs are pinned by two
sums over the 200 real jets: sum_j EFP_j and sum_j (j mod 7 + 1) EFP_j.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from golden_fixtures import golden_jets

from pipelines.metrics import efp, emd, jet_metrics
from pipelines.metrics.jet_metrics import JetMetricSettings

SETTINGS = JetMetricSettings(
    seed=42, num_eval_samples=200, num_batches=5, fpd_min_samples=100, fpd_max_samples=200, kpd_batch_size=200
)

# jetnet 0.2.5 gen_metrics.w1m / w1p / w1efp: (mean, std) over the 5 batches
JETNET_W1M = (0.012740265104118784, 0.0010912669640857691)
JETNET_W1P = {
    "eta_rel": (0.016449196392944544, 0.0021174298629082814),
    "phi_rel": (0.01570271991983952, 0.0020068021405479555),
    "pt_rel": (0.004520811457430728, 0.0015127796094081766),
}
JETNET_W1EFP = {  # energyflow's order of the 5 prime n = 4, d = 4 graphs, named as the project's columns
    "star3_double": (0.0005566080917602865, 5.617276014922773e-05),
    "path4_double_end": (0.00048068031188108035, 4.221064039213684e-05),
    "path4_double_middle": (0.0005021167746219867, 4.3724309735960475e-05),
    "paw": (0.00031924656558885236, 2.6762614457977404e-05),
    "square": (0.00037885878644484467, 3.307706270032077e-05),
}
# jetnet 0.2.5 utils.jet_features(...)["pt"], W1 over w1m's batches: (mean, std) over the 5 batches
JETNET_W1PT = (0.041743262065873164, 0.006645054598434785)
# jetnet 0.2.5 gen_metrics.cov_mmd(real, gen, num_eval_samples=100, num_batches=10): (COV, MMD) =
# (0.38, 0.08144155787998923), the means of these per-batch values (jetnet returns no error)
JETNET_COV_PER_BATCH = [0.43, 0.39, 0.36, 0.42, 0.36, 0.36, 0.39, 0.38, 0.37, 0.34]
JETNET_MMD_PER_BATCH = [
    0.08133300682144524, 0.0819351303508592, 0.08019985916061606, 0.08166565025838361, 0.08308186989211613,
    0.07954483862303662, 0.0788519247607105, 0.08184888140349335, 0.0831193260044899, 0.08283509152474164,
]  # fmt: skip
# gm.cov_mmd(real, real, num_eval_samples=100, num_batches=2): independent draws of the same sample
JETNET_COV_MMD_SELF = (0.525, 0.042218553071121795)
# energyflow 1.4.0 emd.emds(gen[:5], real[:5]) (R = 1, beta = 1, norm=False): D[gen, real]
ENERGYFLOW_EMDS = [
    [0.11558872390534593, 0.20342804860423513, 0.22579236414556386, 0.21694370864143794, 0.18915648593938816],
    [0.15210211217038574, 0.18512817239728233, 0.24108361334163844, 0.2158853906335077, 0.18603215271446882],
    [0.23525228039543752, 0.258289464712141, 0.30835959112264777, 0.265586788005408, 0.26189867988209875],
    [0.12871958457771066, 0.15049571361676195, 0.21461963820493832, 0.19785269800065725, 0.14323742926771485],
    [0.11831666413240839, 0.135452532927964, 0.20389461102988943, 0.17433180371638454, 0.15094684930125293],
]
# jetnet 0.2.5 gen_metrics.fpd / kpd: (value, error)
JETNET_FPD = (0.07048932369695665, 0.021139475139818592)
JETNET_KPD = (0.00784577810446363, 0.004234645677108389)
# energyflow 1.4.0 EFPSet("d<=4", measure="hadr", beta=1, normed=None, coords="ptyphim") on the real jets
ENERGYFLOW_SUM = {
    "trivial": 184.98168095773576,
    "edge": 26.761100212734586,
    "double_edge": 6.115411893561822,
    "triple_edge": 1.6676043619786096,
    "quadruple_edge": 0.525943731044846,
    "path3": 4.298755375148303,
    "path3_double": 1.0646577584967312,
    "path3_triple": 0.3141594984227278,
    "path3_double_double": 0.2871842042201949,
    "triangle": 0.6970674682004059,
    "triangle_double": 0.1720967762240734,
    "star3": 0.7666323221197446,
    "star3_double": 0.20693210208733917,
    "path4": 0.7020056558747235,
    "path4_double_end": 0.1786231650068999,
    "path4_double_middle": 0.1875997060543494,
    "paw": 0.1235597710701914,
    "square": 0.1414953589383565,
    "star4": 0.1519869025339151,
    "chair": 0.1272728891132764,
    "path5": 0.11981305129793769,
    "edge*edge": 3.7538772560684346,
    "edge*double_edge": 0.8880145683231597,
    "edge*triple_edge": 0.25271041875920414,
    "double_edge*double_edge": 0.2207471002991799,
    "edge*path3": 0.6262957687991337,
    "double_edge*path3": 0.15416378862174895,
    "edge*path3_double": 0.16129014649236348,
    "edge*triangle": 0.10422388140126358,
    "edge*edge*edge": 0.5510662488499504,
    "edge*star3": 0.11594665553439738,
    "edge*path4": 0.10662523750473248,
    "path3*path3": 0.10843011743224597,
    "edge*edge*double_edge": 0.13586849269066598,
    "edge*edge*path3": 0.0957730420372741,
    "edge*edge*edge*edge": 0.08489703294269338,
}
ENERGYFLOW_WEIGHTED_SUM = {
    "trivial": 731.8619875298184,
    "edge": 105.47930648788471,
    "double_edge": 24.073122330708706,
    "triple_edge": 6.546993230234018,
    "quadruple_edge": 2.0520683225649123,
    "path3": 16.902883779895422,
    "path3_double": 4.17800469745011,
    "path3_triple": 1.2266197248361896,
    "path3_double_double": 1.11990424284537,
    "triangle": 2.752059924951944,
    "triangle_double": 0.6793473061535276,
    "star3": 3.0092381504052508,
    "star3_double": 0.809037164478779,
    "path4": 2.7539606070730844,
    "path4_double_end": 0.6974460548647843,
    "path4_double_middle": 0.7331018427078868,
    "paw": 0.4875224962205835,
    "square": 0.5524028948478337,
    "star4": 0.5951058569939877,
    "chair": 0.49819338031715005,
    "path5": 0.4688040735769865,
    "edge*edge": 14.712926325834642,
    "edge*double_edge": 3.4724729687995155,
    "edge*triple_edge": 0.9824528526849505,
    "double_edge*double_edge": 0.8565549189180816,
    "edge*path3": 2.451064444292594,
    "double_edge*path3": 0.60026898170589,
    "edge*path3_double": 0.6284237167238329,
    "edge*triangle": 0.41048773387462106,
    "edge*edge*edge": 2.1514178667463364,
    "edge*star3": 0.452980524447458,
    "edge*path4": 0.416389065048802,
    "path3*path3": 0.4234638306798337,
    "edge*edge*double_edge": 0.5278155754926666,
    "edge*edge*path3": 0.3733087303219786,
    "edge*edge*edge*edge": 0.3303003664735342,
}
# the same with normed=True (the efp_normalised option): sum over the real jets
ENERGYFLOW_NORMED_SUM = {
    "trivial": 200.0,
    "edge": 31.22244212985708,
    "double_edge": 7.136806944445972,
    "triple_edge": 1.9451748021432154,
    "quadruple_edge": 0.61252647177489,
    "path3": 5.398944553668702,
    "path3_double": 1.33646500670377,
    "path3_triple": 0.39363123314905174,
    "path3_double_double": 0.35981459358321594,
    "triangle": 0.8753605650670416,
    "triangle_double": 0.21593545315135942,
    "star3": 1.033418247288703,
    "star3_double": 0.2784291863792887,
    "path4": 0.9464019532951791,
    "path4_double_end": 0.24032256139541117,
    "path4_double_middle": 0.25235366092882155,
    "paw": 0.16653520115765957,
    "square": 0.190442370052598,
    "star4": 0.2191690557586159,
    "chair": 0.18352167492317764,
    "path5": 0.17280802565877956,
    "edge*edge": 5.062034526093728,
    "edge*double_edge": 1.1968484051205213,
    "edge*triple_edge": 0.33972968363182615,
    "double_edge*double_edge": 0.29672895043726505,
    "edge*path3": 0.9044675005500521,
    "double_edge*path3": 0.22211002692880413,
    "edge*path3_double": 0.23234512987457678,
    "edge*triangle": 0.15051018325360435,
    "edge*edge*edge": 0.8504172651895661,
    "edge*star3": 0.17868929007767448,
    "edge*path4": 0.16428744804996975,
    "path3*path3": 0.1671134453234154,
    "edge*edge*double_edge": 0.20904393817337608,
    "edge*edge*path3": 0.15732592055204006,
    "edge*edge*edge*edge": 0.14831212577627384,
}


#: COV/MMD on a token batch where a test is not about them (jetnet's 10 x 100 costs 10^5 EMDs)
CHEAP_COV_MMD = {"cov_mmd_num_eval_samples": 5, "cov_mmd_num_batches": 1}


@pytest.fixture(scope="module")
def samples() -> tuple[jet_metrics.JetSample, jet_metrics.JetSample]:
    real, gen = golden_jets()
    return jet_metrics.make_sample(real), jet_metrics.make_sample(gen)


@pytest.fixture(scope="module")
def rows(samples) -> dict:
    """All jet metrics at the golden settings (COV/MMD on a token batch: test_cov_mmd_match_jetnet)."""
    return jet_metrics.jet_metrics(*samples, dataclasses.replace(SETTINGS, **CHEAP_COV_MMD))


def test_efps_match_energyflow(samples):
    real = samples[0]
    names = [g.name for g in efp.GRAPHS]
    assert set(ENERGYFLOW_SUM) == set(names)
    weights = (np.arange(len(real)) % 7 + 1.0)[:, None]
    for name in names:
        col = names.index(name)
        assert real.efps[:, col].sum() == pytest.approx(ENERGYFLOW_SUM[name], rel=1e-12, abs=1e-300), name
        weighted = (weights[:, 0] * real.efps[:, col]).sum()
        assert weighted == pytest.approx(ENERGYFLOW_WEIGHTED_SUM[name], rel=1e-12, abs=1e-300), name
    real_pf, _ = golden_jets()
    normed = efp.efps(real_pf[..., :3], real_pf[..., 3] == 0, normalised=True)
    for name in names:
        assert normed[:, names.index(name)].sum() == pytest.approx(ENERGYFLOW_NORMED_SUM[name], rel=1e-12), (
            name
        )


def test_w1_fpd_kpd_match_jetnet(samples, rows):
    assert (rows["W1M"]["value"], rows["W1M"]["error"]) == pytest.approx(JETNET_W1M, rel=1e-10)
    for feature, expected in JETNET_W1P.items():
        entry = rows[f"W1P_{feature}"]
        assert (entry["value"], entry["error"]) == pytest.approx(expected, rel=1e-10), feature
    for graph, expected in JETNET_W1EFP.items():
        entry = rows[f"W1EFP_{graph}"]
        assert (entry["value"], entry["error"]) == pytest.approx(expected, rel=1e-10), graph
    # the published averages: mean of jetnet's per-feature means; jetnet's error convention for it
    means = [m for m, _ in JETNET_W1EFP.values()]
    stds = [s for _, s in JETNET_W1EFP.values()]
    assert rows["W1EFP"]["value"] == pytest.approx(np.mean(means), rel=1e-10)
    jetnet_norm = jet_metrics.jet_metrics(
        *samples, dataclasses.replace(SETTINGS, w1_error="jetnet_norm", **CHEAP_COV_MMD)
    )
    assert jetnet_norm["W1EFP"]["error"] == pytest.approx(np.linalg.norm(stds), rel=1e-10)
    p_stds = [s for _, s in JETNET_W1P.values()]
    assert jetnet_norm["W1P"]["error"] == pytest.approx(np.linalg.norm(p_stds), rel=1e-10)
    # FPD: the same draws; the least-squares fit of FD = a + b / N converges to ~1e-6 relative
    assert rows["FPD"]["value"] == pytest.approx(JETNET_FPD[0], rel=1e-5)
    assert rows["FPD"]["error"] == pytest.approx(JETNET_FPD[1], rel=1e-5)
    assert (rows["KPD"]["value"], rows["KPD"]["error"]) == pytest.approx(JETNET_KPD, rel=1e-9)


def test_normalised_efps_change_the_published_numbers(samples):
    """The option is not jetnet's convention: on this fixture (sum pt_rel 0.75-1.0) W1EFP moves."""
    real_pf, gen_pf = golden_jets()
    normed = [jet_metrics.make_sample(pf, efp_normalised=True) for pf in (real_pf, gen_pf)]
    cheap = dataclasses.replace(SETTINGS, **CHEAP_COV_MMD)
    rows = jet_metrics.jet_metrics(*normed, cheap)
    default = jet_metrics.jet_metrics(*samples, cheap)
    assert abs(rows["W1EFP"]["value"] / default["W1EFP"]["value"] - 1) > 0.1


def test_jet_pt_w1_matches_jetnet(rows):
    assert (rows["W1PT"]["value"], rows["W1PT"]["error"]) == pytest.approx(JETNET_W1PT, rel=1e-10)
    assert rows["W1PT_x1e3"]["value"] == pytest.approx(JETNET_W1PT[0] * 1e3, rel=1e-10)


def test_emd_matches_energyflow():
    """Both solve the same transport problem exactly (network simplex): agreement to rounding."""
    real_pf, gen_pf = golden_jets()
    real = emd.clouds(real_pf[:5, :, :3], real_pf[:5, :, 3] < 0.5)
    gen = emd.clouds(gen_pf[:5, :, :3], gen_pf[:5, :, 3] < 0.5)
    assert emd.emd_matrix(gen, real) == pytest.approx(np.array(ENERGYFLOW_EMDS), rel=1e-12)


def test_cov_mmd_match_jetnet(samples):
    """The same batch draws (seed 42, real then generated per batch) and the same exact EMDs, at
    jetnet's default sizes (10 batches of 100): COV is a count and agrees exactly, MMD to rounding."""
    assert (SETTINGS.cov_mmd_num_eval_samples, SETTINGS.cov_mmd_num_batches) == (100, 10)
    per_batch = jet_metrics.cov_mmd(*samples, SETTINGS)
    assert per_batch[:, 0].tolist() == JETNET_COV_PER_BATCH
    assert per_batch[:, 1] == pytest.approx(JETNET_MMD_PER_BATCH, rel=1e-12)
    assert per_batch.mean(axis=0) == pytest.approx([0.38, 0.08144155787998923], rel=1e-12)


def test_cov_mmd_of_the_sample_against_itself_matches_jetnet(samples):
    """Independent draws from one sample: COV about 0.5, MMD well above 0 (not 1 and 0: those need the
    same batch on both sides, see test_emd.py)."""
    real = samples[0]
    settings = dataclasses.replace(SETTINGS, cov_mmd_num_batches=2)
    cov, mmd = jet_metrics.cov_mmd(real, real, settings).mean(axis=0)
    assert (cov, mmd) == pytest.approx(JETNET_COV_MMD_SELF, rel=1e-12)
