"""Campaign -> work units, as pure functions (no database, no BOINC calls).

TTV campaigns: one work unit per system x perturber-period bin x run (a campaign comparing models has
bins per model, numbered across models, each bin naming its model and the config a likelihood per model). A bin whose nested-sampling run
would exceed the wall-time budget on a reference volunteer core is split into ``k`` runs with
``nlive / k`` live points each (runs of one bin merge into the equivalent of their summed live points,
dynesty ``merge_runs``). Seeds: ``[campaign entropy, bin, run]``, i.e. ``SeedSequence(entropy,
spawn_key=(bin, run))``: deterministic, distinct per work unit, stored in the spec.

Image campaigns: one work unit per frame x output tile; the input is a FITS cutout of the frame with a
margin (data + WEIGHT HDU, the full frame's WCS in the header), the output grid's WCS and the tile
bounds travel in the params. Tiles of one frame whose work is tiny are grouped along their tile row
into one wider tile (up to ``MAX_TILE_PIXELS``).

Input files get content-addressed physical names (``oa_<sha256[:40]>.<ext>``): unique and immutable,
as ``stage_file`` requires.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from server.core.boinc_contract import (CUTOUT_OPEN_NAME, MAX_NLIVE_PER_RUN, MAX_TILE_PIXELS, SPEC_OPEN_NAME,
                                   check_wu_name)
from work_generator.sizing import Resources

# Budget on a reference volunteer core (3 GHz): the seed's 30-45 minutes of wall time.
TARGET_WALL_S = 40 * 60
MAX_WALL_S = 45 * 60
MIN_TILE_WALL_S = 60.0  # tiles cheaper than this are grouped with their row neighbours


@dataclass(frozen=True)
class InputFile:
    open_name: str
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def physical_name(self) -> str:
        ext = self.open_name.rsplit(".", 1)[-1]
        return f"oa_{self.sha256[:40]}.{ext}"


@dataclass(frozen=True)
class PlannedWorkUnit:
    name: str
    kind: str
    spec: dict
    files: tuple[InputFile, ...]      # in the input template's file-number order (wu.json first)
    resources: Resources
    bin_index: int | None = None
    run_index: int | None = None
    label: Mapping[str, Any] = field(default_factory=dict)


def campaign_tag(campaign_id: int, seed_entropy: str | int) -> str:
    """Stable prefix for a campaign's work-unit names (id + a hash of its seed: survives a DB reset)."""
    digest = hashlib.sha256(str(seed_entropy).encode()).hexdigest()[:8]
    return f"oa_c{int(campaign_id)}_{digest}"


def spec_file(kind: str, seed: Sequence[int], inputs: Mapping[str, str], params: Mapping[str, Any]) -> tuple[dict, InputFile]:
    spec = {"format": "openastro.wu", "version": 1, "kind": kind, "seed": [int(s) for s in seed],
            "inputs": dict(inputs), "params": params}
    from app.spec import parse_spec  # the app's own validation: never send a spec the app refuses

    parse_spec(json.loads(json.dumps(spec)))
    data = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return spec, InputFile(SPEC_OPEN_NAME, data)


# --- TTV ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSplit:
    n_runs: int
    nlive_per_run: int
    seconds_per_run: float


def split_runs(nlive_total: int, seconds_for_nlive: Callable[[int], float], *,
               max_s: float = MAX_WALL_S, max_nlive: int = MAX_NLIVE_PER_RUN, min_nlive: int = 10) -> RunSplit:
    """Fewest runs whose per-run cost fits ``max_s`` (cost ~ nlive for a static nested run)."""
    if nlive_total < min_nlive:
        raise ValueError(f"nlive {nlive_total} is below the minimum of {min_nlive} live points")
    k = max(1, math.ceil(nlive_total / max_nlive))
    while True:
        nlive = math.ceil(nlive_total / k)
        seconds = seconds_for_nlive(nlive)
        if seconds <= max_s or nlive <= min_nlive:
            break
        # cost ~ nlive: jump close to the answer, then step one run at a time (fewest runs within max_s)
        k = max(k + 1, math.floor(k * seconds / max_s))
    return RunSplit(k, nlive, seconds)


def bin_prior(prior: Mapping[str, Any], perturber: str, bounds: Sequence[float]) -> dict:
    """The campaign prior with the perturber's period restricted to one bin (same distribution family)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (0 < lo < hi):
        raise ValueError(f"period bin {list(bounds)!r} is not an interval 0 < lo < hi (days)")
    out = copy.deepcopy(dict(prior))
    planets = out.get("planets") or []
    for planet in planets:
        if planet.get("name") == perturber:
            dist = planet["period"].get("dist")
            if dist not in ("uniform", "loguniform"):
                raise ValueError(f"perturber {perturber!r} period prior is {dist!r}; binning needs uniform "
                                 "or loguniform")
            planet["period"] = {"dist": dist, "min": lo, "max": hi}
            return out
    raise ValueError(f"perturber {perturber!r} is not among the prior's planets "
                     f"{[p.get('name') for p in planets]}")


RERUN_INDEX = 1000  # WorkUnit.run_index of attempt A's run r: 1000 A + r


def plan_ttv(campaign_id: int, seed_entropy: int, config: Mapping[str, Any],
             estimate: Callable[[str, dict], Resources]) -> list[PlannedWorkUnit]:
    """Work units of a TTV campaign. ``config``: likelihood, perturber, bins, sampler (see docs/boinc.md)."""
    for key in ("likelihood", "perturber", "bins", "sampler"):
        if key not in config:
            raise ValueError(f"TTV campaign config lacks {key!r}")
    sampler = dict(config["sampler"])
    name = sampler.get("name", "dynesty")
    kind = {"dynesty": "ttv-nested", "emcee": "ttv-emcee"}.get(name)
    if kind is None:
        raise ValueError(f"sampler {name!r} is not dynesty or emcee")
    tag = campaign_tag(campaign_id, seed_entropy)
    bins = [(int(b["index"]), (b["period_min"], b["period_max"]), b.get("model")) if isinstance(b, Mapping)
            else (i, tuple(b), None) for i, b in enumerate(config["bins"])]
    if not bins:
        raise ValueError("TTV campaign has no period bins")
    likelihoods = config.get("likelihoods") or {}
    planned = []
    for b, bounds, model in bins:
        if model is not None and str(model) not in likelihoods:
            raise ValueError(f"bin {b} is of model {model!r} but the campaign has likelihoods for models "
                             f"{sorted(likelihoods)} only")
        # a bin of a multi-model campaign samples its model's likelihood
        likelihood = dict(likelihoods[str(model)] if model is not None else config["likelihood"])
        likelihood["prior"] = bin_prior(likelihood["prior"], config["perturber"], bounds)
        if likelihood.get("dt") is None:
            # Fix the integration step in the spec (the app would choose the same one): every host and the
            # validator's likelihood recomputation then integrate with the same step.
            from app.ttv.likelihood import TTVLikelihood

            likelihood["dt"] = TTVLikelihood(likelihood).dt

        def params_for(opts: dict, run: int, n_runs: int) -> dict:
            return {"likelihood": likelihood, "sampler": opts,
                    "label": {"campaign_id": int(campaign_id), "bin": b, "run": run, "n_runs": n_runs,
                              "bin_bounds": [float(bounds[0]), float(bounds[1])],
                              "perturber": config["perturber"],
                              **({} if model is None else {"model": int(model)})}}

        if kind == "ttv-nested":
            nlive_total = int(sampler.get("nlive", 100))

            def seconds(nlive: int) -> float:
                return estimate(kind, params_for(dict(sampler, nlive=nlive), 0, 1)).seconds_ref

            split = split_runs(nlive_total, seconds)
            runs = [(r, dict(sampler, nlive=split.nlive_per_run), split.n_runs) for r in range(split.n_runs)]
        else:
            runs = [(r, dict(sampler), int(config.get("emcee_runs", 1))) for r in range(int(config.get("emcee_runs", 1)))]
        for run, opts, n_runs in runs:
            params = params_for(opts, run, n_runs)
            spec, wu_json = spec_file(kind, [int(seed_entropy), b, run], {}, params)
            wu_name = check_wu_name(f"{tag}_ttv_b{b:02d}_r{run:02d}")
            planned.append(PlannedWorkUnit(wu_name, kind, spec, (wu_json,), estimate(kind, params),
                                           bin_index=b, run_index=run, label=params["label"]))
        # Missed-peak reruns the assimilator asked for (config["reruns"][bin] = attempts): every first-attempt run
        # of the bin again, with the seed server.ttv.inference gives a local rerun ([..., run, 1000 + attempt]).
        for attempt in range(1, int((config.get("reruns") or {}).get(str(b), 0)) + 1):
            for run, opts, n_runs in runs:
                params = params_for(opts, run, n_runs)
                params["label"]["attempt"] = attempt
                spec, wu_json = spec_file(kind, [int(seed_entropy), b, run, 1000 + attempt], {}, params)
                wu_name = check_wu_name(f"{tag}_ttv_b{b:02d}_r{run:02d}_a{attempt}")
                planned.append(PlannedWorkUnit(wu_name, kind, spec, (wu_json,), estimate(kind, params),
                                               bin_index=b, run_index=RERUN_INDEX * attempt + run,
                                               label=params["label"]))
    return planned


# --- images ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameInput:
    """One input frame of an image campaign (already read: data, weight, the frame's WCS header)."""

    index: int
    data: Any = field(repr=False)
    weight: Any = field(repr=False)
    header: Any = field(repr=False)   # astropy Header with the frame's celestial WCS


def tile_grid(shape: Sequence[int], tile: int) -> list[tuple[int, int, int, int]]:
    ny, nx = int(shape[0]), int(shape[1])
    if tile < 16 or tile * tile > MAX_TILE_PIXELS:
        raise ValueError(f"tile size {tile} must be 16..{int(math.isqrt(MAX_TILE_PIXELS))} px")
    return [(y0, min(y0 + tile, ny), x0, min(x0 + tile, nx)) for y0 in range(0, ny, tile) for x0 in range(0, nx, tile)]


def _cutout_fits(frame: FrameInput, box: tuple[int, int, int, int]) -> bytes:
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    y0, y1, x0, x1 = box
    header = WCS(frame.header).to_header(relax=True)  # the FULL frame's WCS (the kernel wants it)
    header["OA_Y0"] = (y0, "cutout origin row in the frame")
    header["OA_X0"] = (x0, "cutout origin column in the frame")
    data = np.ascontiguousarray(frame.data[y0:y1, x0:x1], dtype=np.float32)
    weight = np.ascontiguousarray(frame.weight[y0:y1, x0:x1], dtype=np.float32)
    hdul = fits.HDUList([fits.PrimaryHDU(data, header=header), fits.ImageHDU(weight, name="WEIGHT")])
    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="exception")
    return buffer.getvalue()


def _group_row(tiles, cutouts, seconds_of, frame) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Merge consecutive tiles of one tile row while they are tiny and the merged tile stays small."""
    groups = []
    for bounds, cut in zip(tiles, cutouts):
        if groups:
            (gb, gc) = groups[-1]
            same_row = gb[0] == bounds[0] and gb[1] == bounds[1] and gb[3] == bounds[2]
            merged_b = (gb[0], gb[1], gb[2], bounds[3])
            merged_px = (merged_b[1] - merged_b[0]) * (merged_b[3] - merged_b[2])
            if same_row and merged_px <= MAX_TILE_PIXELS and seconds_of(merged_b) < MIN_TILE_WALL_S:
                merged_c = (min(gc[0], cut[0]), max(gc[1], cut[1]), min(gc[2], cut[2]), max(gc[3], cut[3]))
                groups[-1] = (merged_b, merged_c)
                continue
        groups.append((bounds, cut))
    return groups


def plan_tiles(campaign_id: int, seed_entropy: int, frames: Sequence[FrameInput], grid_header: Mapping[str, Any],
               grid_shape: Sequence[int], estimate: Callable[[str, dict], Resources], *, tile: int = 512,
               margin_px: int = 2, method: str = "bilinear", conserve_flux: bool = True) -> list[PlannedWorkUnit]:
    """Work units of an image campaign: frame x output tile (tiny tiles grouped along rows).

    ``conserve_flux`` (default, as in ``server.image.reproject.reproject_image``) scales values by the output/input pixel
    area, so frames of different pixel scales co-add in one flux-per-output-pixel unit.
    """
    from app.reproject_kernel import cutout_for_tile, plan_mapping

    tag = campaign_tag(campaign_id, seed_entropy)
    # header cards, not WCS objects: the kernel then uses the same mapping code as the app's tiles
    out_wcs = dict(grid_header)
    cards = {k: v for k, v in dict(grid_header).items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    planned = []
    for frame in frames:
        in_wcs = frame.header
        tiles, cutouts = [], []
        for bounds in tile_grid(grid_shape, tile):
            cut = cutout_for_tile(frame.data.shape, in_wcs, out_wcs, bounds, margin_px=margin_px)
            if cut is not None:
                tiles.append(bounds)
                cutouts.append(cut)

        # One mapping step per frame (planned over the whole output grid), so every tile of the frame samples the
        # same coarse grid and the assembled frame is bitwise equal to the whole-frame reprojection.
        ny_in, nx_in = frame.data.shape
        step = int(plan_mapping(in_wcs, out_wcs, (0, int(grid_shape[0]), 0, int(grid_shape[1])),
                                (0, ny_in, 0, nx_in)).step)

        def seconds_of(b):
            return estimate("reproject-tile", {"tile_bounds": list(b), "method": method}).seconds_ref

        for bounds, _ in _group_row(tiles, cutouts, seconds_of, frame):
            cut = cutout_for_tile(frame.data.shape, in_wcs, out_wcs, bounds, margin_px=margin_px)
            if cut is None:
                continue
            cutout = InputFile(CUTOUT_OPEN_NAME, _cutout_fits(frame, cut))
            params = {"output_wcs": cards, "tile_bounds": [int(v) for v in bounds],
                      "cutout_origin": [int(cut[0]), int(cut[2])], "method": method, "step": step,
                      "conserve_flux": bool(conserve_flux)}
            spec, wu_json = spec_file("reproject-tile", [int(seed_entropy), frame.index, bounds[0], bounds[2]],
                                      {"cutout": CUTOUT_OPEN_NAME}, params)
            name = check_wu_name(f"{tag}_tile_f{frame.index:04d}_y{bounds[0]:05d}_x{bounds[2]:05d}")
            resources = estimate("reproject-tile", dict(params, cutout_shape=[cut[1] - cut[0], cut[3] - cut[2]]))
            planned.append(PlannedWorkUnit(name, "reproject-tile", spec, (wu_json, cutout), resources,
                                           label={"frame": frame.index, "tile_bounds": list(bounds)}))
    return planned
