"""Real/bogus classifier: braai (ZTF's pretrained CNN) run by our numpy code, and our own injection-trained CNN.

Statistical checks use fixed seeds; each states its truth and tolerance. Test time is kept small: the braai
checks score at most a few hundred cutouts, the training test trains a tiny model for a few seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner
from scipy.signal import correlate

from server.cli import main as cli
from server.transients import classify, injections
from server.transients.cnn import conv2d, forward, make_network
from server.transients.cnn_reference import reference_forward
from server.transients.preprocess import normalise, preprocess
from server.transients.train import (
    TrainConfig, _backward, _forward_train, init_network, load_model, roc_auc, save_model, train,
)

ALERTS = Path(__file__).parent / "data" / "ztf-alerts"


def _alert(name: str) -> tuple[dict, np.ndarray]:
    with open(ALERTS / name, "rb") as handle:
        record = next(iter(fastavro.reader(handle)))
    planes = []
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        with gzip.open(io.BytesIO(record[key]["stampData"])) as raw, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ZTF cutouts carry a non-standard SIMPLE card (VerifyWarning)
            planes.append(fits.getdata(io.BytesIO(raw.read())).astype(np.float32))
    return record, np.stack(planes, axis=-1)[None]


# --- braai on ZTF's own alerts ---------------------------------------------------------------------------------

def test_braai_reproduces_the_alert_drb_score_within_0_02():
    """Compared field: candidate.drb (braai, drbversion d6_m7) of alert 472263571115115000; measured 0.99996
    here vs drb 0.98764 (|diff| 0.012)."""
    record, triplet = _alert("472263571115115000.avro")
    candidate = record["candidate"]
    assert candidate["drbversion"] == "d6_m7"
    score = classify.score_triplets(triplet, "braai")
    assert score.shape == (1,)
    assert abs(float(score[0]) - candidate["drb"]) <= 0.02


@pytest.mark.xfail(strict=True, reason="this 2019 alert has no drb; its rb (0.447) is ZTF's random-forest "
                                        "classifier t8_f5_c3, not braai, so braai (0.997 here) is not expected "
                                        "to reproduce it (docs/transients.md)")
def test_braai_reproduces_the_rb_score_of_an_alert_without_drb():
    """Compared field: candidate.rb (drb absent). Strict xfail: it fails loudly if it ever starts to agree."""
    record, triplet = _alert("2019_01_10_739260766315010006.avro")
    candidate = record["candidate"]
    assert candidate.get("drb") is None and candidate["rbversion"] == "t8_f5_c3"
    assert abs(float(classify.score_triplets(triplet, "braai")[0]) - candidate["rb"]) <= 0.02


def test_numpy_forward_pass_matches_the_direct_loop_reference_on_alert_cutouts():
    """Fast path (per-tap matrix products, float32) vs per-pixel float64 loop: |diff| <= 1e-5."""
    net = classify.load_braai()
    triplets = np.concatenate([_alert(n)[1] for n in ("472263571115115000.avro",
                                                      "2019_01_10_739260766315010006.avro")])
    rng = np.random.default_rng(5)
    triplets = np.concatenate([triplets, rng.normal(100, 10, (2, 63, 63, 3)).astype(np.float32)])
    x = normalise(triplets, classify.BRAAI_NORMALISATION)
    np.testing.assert_allclose(forward(net, x), reference_forward(net, x), atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_equals_scipy_cross_correlation_summed_over_input_channels(padding):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 9, 8, 3))
    kernel = rng.normal(size=(3, 3, 3, 4))
    bias = rng.normal(size=4)
    ours = conv2d(x, kernel, bias, padding)
    for n in range(2):
        for k in range(4):
            expected = sum(correlate(x[n, :, :, c], kernel[:, :, c, k], mode=padding) for c in range(3)) + bias[k]
            np.testing.assert_allclose(ours[n, :, :, k], expected, atol=1e-12)


def test_braai_normalisation_divides_each_row_by_its_l2_norm_and_zeroes_nan():
    triplet = np.arange(63 * 63 * 3, dtype=np.float32).reshape(1, 63, 63, 3) + 1
    triplet[0, 5, 7, 1] = np.nan
    triplet[0, 10, :, 2] = 0.0
    x = normalise(triplet, "rows")
    assert x[0, 5, 7, 1] == 0.0
    np.testing.assert_allclose(np.linalg.norm(x[0, 3, :, 0]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x[0, 10, :, 2], 0.0)  # a zero row stays zero (no division by 0)
    y = normalise(triplet, "channel")
    np.testing.assert_allclose(np.linalg.norm(y[0, :, :, 0]), 1.0, rtol=1e-6)


def test_braai_scores_obvious_real_injections_high_and_obvious_bogus_low():
    """Truth: bright PSF sources (S/N 30) on flat sky are real; hot pixels, cosmic rays and satellite trails are
    bogus. Tolerances: real median >= 0.9, each bogus kind's median <= 0.1 (seed 3, 12 of each)."""
    rng = np.random.default_rng(3)
    real = np.stack([injections.make_real(rng, "flat", snr=30.0)[0] for _ in range(12)])
    assert np.median(classify.score_triplets(real)) >= 0.9
    for kind in ("hot_pixel", "cosmic_ray", "satellite_trail"):
        bogus = np.stack([injections.make_bogus(rng, kind)[0] for _ in range(12)])
        assert np.median(classify.score_triplets(bogus)) <= 0.1, kind


# --- inputs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(63, 63, 3), (2, 63, 63), (2, 31, 31, 3), (2, 63, 63, 4)])
def test_score_triplets_rejects_wrong_shapes_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"\(N, 63, 63, 3\)"):
        classify.score_triplets(np.zeros(shape, np.float32))


def test_device_cpu_is_the_default_auto_falls_back_to_it_and_gpu_without_cupy_is_refused():
    triplet = _alert("472263571115115000.avro")[1]
    cpu = classify.score_triplets(triplet)
    assert classify.array_module("cpu") is np
    try:
        import cupy  # noqa: F401
    except ImportError:
        np.testing.assert_array_equal(classify.score_triplets(triplet, device="auto"), cpu)
        with pytest.raises(ValueError, match="cupy is not installed"):
            classify.score_triplets(triplet, device="gpu")
    else:  # a GPU machine: the same scores to float32 rounding
        np.testing.assert_allclose(classify.score_triplets(triplet, device="auto"), cpu, atol=1e-5)
    with pytest.raises(ValueError, match="'tpu'"):
        classify.score_triplets(triplet, device="tpu")


def test_score_triplets_rejects_an_unknown_model_name():
    with pytest.raises(ValueError, match="no-such-model"):
        classify.score_triplets(np.zeros((1, 63, 63, 3), np.float32), "no-such-model")


def test_scores_are_finite_in_unit_interval_for_cutouts_with_nan_edges_and_blank_ones():
    rng = np.random.default_rng(8)
    edges = np.stack([injections.make_bogus(rng, "edge")[0] for _ in range(4)])
    assert np.isnan(edges).any()
    triplets = np.concatenate([edges, np.zeros((1, 63, 63, 3), np.float32)])
    for model in ("braai", "openastro"):
        scores = classify.score_triplets(triplets, model)
        assert scores.shape == (5,) and np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert classify.score_triplets(np.zeros((0, 63, 63, 3), np.float32)).shape == (0,)


# --- injections ----------------------------------------------------------------------------------------------------

def test_injection_sets_are_reproducible_from_the_seed_and_cover_every_kind():
    a = injections.make_set(np.random.default_rng(21), 120)
    b = injections.make_set(np.random.default_rng(21), 120)
    np.testing.assert_array_equal(a.triplets, b.triplets)
    assert a.triplets.shape == (120, 63, 63, 3) and a.triplets.dtype == np.float32
    assert set(a.kinds[a.labels == 1]) == set(injections.REAL_KINDS)
    assert set(a.kinds[a.labels == 0]) == set(injections.BOGUS_KINDS)


def test_real_difference_is_science_minus_reference_up_to_the_seeing_change_of_field_stars():
    """diff - (sci - ref) = scene_ref - scene_sci is noise-free; on a flat sky it is 0 away from field stars
    (median over pixels |.| < 0.05 ADU, float32 rounding), and the transient is in the difference, not in
    the reference: the difference's central 5x5 sum is > 0 for every S/N-20 source (seed 4, 20 sources)."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        t, _ = injections.make_real(rng, "flat", snr=20.0)
        sci, ref, diff = t[..., 0].astype(np.float64), t[..., 1], t[..., 2]
        assert np.median(np.abs(diff - (sci - ref))) < 0.05
        assert diff[29:34, 29:34].sum() > 0


def test_injected_sn_scales_with_the_request_in_the_difference():
    """Truth: PSF-fit S/N 10 in the difference. A caller does not know the PSF, so the check uses an aperture
    (r = 3 px) sum over the noise of the difference's outer region: for FWHM 1.5-4.5 px that recovers ~0.75 of
    the PSF-fit S/N (measured: mean 7.5 +- 0.2 over 60 sources, seed 6; 14.9 at S/N 20). Bounds [6, 9.5]:
    a flux scale off by 2x either way (about 3.8 or 15) falls outside."""
    rng = np.random.default_rng(6)
    values = []
    yy, xx = np.mgrid[0:63, 0:63]
    r = np.hypot(xx - 31, yy - 31)
    aperture, outer = r <= 3.0, r >= 20
    for _ in range(60):
        t, _ = injections.make_real(rng, "flat", snr=10.0)
        diff = t[..., 2].astype(np.float64)
        values.append(diff[aperture].sum() / (np.std(diff[outer]) * np.sqrt(aperture.sum())))
    assert 6.0 <= np.mean(values) <= 9.5


def test_injection_generator_rejects_unknown_kinds_and_bad_sizes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="supernova"):
        injections.make_real(rng, "supernova")
    with pytest.raises(ValueError, match="ghost"):
        injections.make_bogus(rng, "ghost")
    with pytest.raises(ValueError, match="-1"):
        injections.make_set(rng, -1)


# --- our model -----------------------------------------------------------------------------------------------------

def test_backprop_gradients_match_finite_differences():
    """Relative error of every analytic weight gradient vs central differences (float64) < 1e-5."""
    rng = np.random.default_rng(2)
    layers = [{"type": "conv2d", "filters": 2, "kernel_size": [3, 3], "padding": "valid", "activation": "relu"},
              {"type": "maxpool2d", "pool_size": 2},
              {"type": "flatten"},
              {"type": "dense", "units": 3, "activation": "relu"},
              {"type": "dense", "units": 1, "activation": "sigmoid"}]
    net = init_network(rng, (7, 7, 2), layers)
    params = [None if w is None else [w[0].astype(np.float64), w[1].astype(np.float64) + 0.05] for w in net.weights]
    x = rng.normal(size=(4, 7, 7, 2))
    y = np.array([1.0, 0.0, 1.0, 0.0])

    def loss(p):
        logit, _ = _forward_train(net, p, x)
        return float(np.sum(np.logaddexp(0.0, logit) - y * logit))

    logit, cache = _forward_train(net, params, x)
    grads = _backward(net, params, cache, 1.0 / (1.0 + np.exp(-logit)) - y)
    for index, p in enumerate(params):
        if p is None:
            continue
        for k in range(2):
            numeric = np.zeros_like(p[k])
            for pos in np.ndindex(p[k].shape):
                saved = p[k][pos]
                p[k][pos] = saved + 1e-6
                up = loss(params)
                p[k][pos] = saved - 1e-6
                down = loss(params)
                p[k][pos] = saved
                numeric[pos] = (up - down) / 2e-6
            err = np.max(np.abs(numeric - grads[index][k])) / max(np.max(np.abs(numeric)), 1e-8)
            assert err < 1e-5, (index, k, err)


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(9)
    scores = rng.integers(0, 5, 40).astype(float)
    labels = rng.integers(0, 2, 40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert roc_auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(scores, np.ones(40))


def test_shipped_openastro_model_reaches_roc_auc_0_98_on_held_out_injections():
    """The model in server/transients/models/openastro/ (made by `openastro transients train` with its
    defaults) on 600 injections from seed 31 (not a training stream): AUC >= 0.98 (0.9993 at training)."""
    heldout = injections.make_set(np.random.default_rng(31), 600)
    assert roc_auc(classify.score_triplets(heldout.triplets, "openastro"), heldout.labels) >= 0.98


def test_train_command_writes_a_plain_data_model_that_scores_like_the_trained_network(tmp_path):
    """A short run (600 triplets, 3 epochs, seed 5) must reach held-out AUC >= 0.9 (a lower bar than the
    shipped model's 0.98); the saved JSON + npz reload to identical scores and hold no pickled objects."""
    out = tmp_path / "rb.json"
    result = CliRunner().invoke(cli, ["transients", "train", "--out", str(out), "--n-train", "600",
                                      "--n-test", "300", "--epochs", "3", "--seed", "5"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["training"]["heldout_roc_auc"] >= 0.9
    assert "held-out ROC AUC" in result.output
    with np.load(tmp_path / "rb.npz", allow_pickle=False) as npz:
        assert all(npz[name].dtype == np.float32 for name in npz.files)
    heldout = injections.make_set(np.random.default_rng(32), 200)
    scores = classify.score_triplets(heldout.triplets, str(out))
    saved = load_model(out)
    np.testing.assert_array_equal(scores, forward(saved.network, preprocess(heldout.triplets, saved.crop)))
    assert roc_auc(scores, heldout.labels) >= 0.9


def test_a_model_file_of_another_format_version_is_refused(tmp_path):
    result = train(TrainConfig(n_train=40, n_test=40, epochs=1, seed=1))
    path = save_model(result, tmp_path / "m")
    assert path.name == "m.json"
    record = json.loads(path.read_text())
    record["format_version"] = 99
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="format version"):
        load_model(path)


def test_train_command_turns_a_bad_option_into_one_error_line(tmp_path):
    result = CliRunner().invoke(cli, ["transients", "train", "--out", str(tmp_path / "x.json"), "--crop", "30"])
    assert result.exit_code == 1
    assert "crop must be an odd number" in result.output
    assert not (tmp_path / "x.json").exists()


def test_network_refuses_weights_that_do_not_fit_its_layers():
    layers = [{"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}]
    with pytest.raises(ValueError, match="dense kernel must be"):
        make_network((2, 2, 1), layers, [None, (np.zeros((5, 1)), np.zeros(1))])
