"""The read API ``/api/v1/...`` (targets, observations, light curves, periodograms, transit times, campaigns,
posteriors, stacks) and the admin API (campaign launch/cancel, queue status, site keys).

Every list is paged (``limit``, ``offset``; the light curve by ``after_id``). Bad parameters are answered 4xx with
``{"error": {"code", "message"}}`` naming the value; nothing here answers 500 for a client's mistake. Formats are
chosen with ``format=`` (json, csv, fits, votable; posteriors: csv, npz, fits). Access rules: docs/portal.md.
"""

from __future__ import annotations

import io
import os
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from server.web import products as P
from server.web.access import Reader, check_csrf, reader_of, require_admin, require_user
from server.web.respcache import Cached, ResponseCache

API_PREFIX = "/api/v1"
Id = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page (1-1000)")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="rows to skip")]
ReaderDep = Annotated[Reader, Depends(reader_of)]

MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "fits": "application/fits",
         "votable": "application/x-votable+xml", "npz": "application/octet-stream"}


def _download(body: bytes | str, fmt: str, filename: str) -> Response:
    return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def build_router(app, runner) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    lc_max = int(app.settings.portal_lightcurve_max)
    lc_cache = ResponseCache(int(app.settings.portal_cache_mb) * 2**20)
    router.lightcurve_cache = lc_cache  # create_api puts it on api.state (tests, benchmarks)

    @router.get("/me", tags=["auth"], summary="The logged-in user (or anonymous)")
    async def me(reader: ReaderDep) -> dict:
        p = reader.principal
        return {"user": None} if p is None else {"user": {"name": p.name, "role": p.role}, "csrf": p.csrf_token}

    # --- targets --------------------------------------------------------------------------------------------
    @router.get("/targets", tags=["targets"], summary="Targets: search by name and/or cone (degrees)")
    async def targets(name: Annotated[str | None, Query(max_length=120)] = None,
                      ra: Annotated[float | None, Query(description="cone centre RA, deg")] = None,
                      dec: Annotated[float | None, Query(description="cone centre Dec, deg")] = None,
                      radius: Annotated[float | None, Query(description="cone radius, deg")] = None,
                      kind: Annotated[str | None, Query(max_length=32)] = None,
                      limit: Limit = 50, offset: Offset = 0) -> dict:
        page = await run_in_threadpool(P.list_targets, app.db, name=name, ra=ra, dec=dec, radius=radius,
                                       kind=kind, limit=limit, offset=offset)
        return page.to_dict()

    @router.get("/targets/{target_id}", tags=["targets"], summary="One target: bands, planets, products")
    async def target(target_id: Id, reader: ReaderDep) -> dict:
        return await run_in_threadpool(P.get_target, app.db, target_id, published_only=reader.published_only)

    @router.get("/targets/{target_id}/lightcurve", tags=["targets"],
                summary="Light curve of one band (json, csv, fits, votable); BJD_TDB in days, mag in mag")
    async def lightcurve(target_id: Id, band: Annotated[str, Query(min_length=1, max_length=16)],
                         format: Literal["json", "csv", "fits", "votable"] = "json",
                         limit: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
                         after_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                         columns: Annotated[str | None, Query(max_length=400, description=(
                             "JSON only: comma-separated subset of " + ", ".join(P.LC_COLUMNS)))] = None,
                         if_none_match: Annotated[str | None, Header(max_length=2000)] = None) -> Response:
        if columns is not None and format != "json":
            raise P.BadParameter(f"columns applies to format=json only (downloads carry every column), "
                                 f"got format={format}")
        if limit is not None and limit > lc_max:
            raise P.BadParameter(f"limit={limit} is above the largest page of {lc_max} points "
                                 "(page with after_id; setting portal_lightcurve_max)")
        version = await run_in_threadpool(P.light_curve_version, app.db, target_id, band)
        key = (target_id, band, format, columns, limit or lc_max, after_id, version)
        etag = lc_cache.etag(key)
        if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=304, headers={"ETag": etag})
        cached = lc_cache.get(key)
        if cached is None:
            response = await _lightcurve_response(target_id, band, format, limit, after_id, columns)
            cached = Cached(response.body, response.media_type, {k: v for k, v in response.headers.items()
                                                                 if k.lower() == "content-disposition"})
            lc_cache.put(key, cached)
        return Response(cached.body, media_type=cached.media_type, headers={**cached.headers, "ETag": etag})

    async def _lightcurve_response(target_id, band, format, limit, after_id, columns) -> Response:
        lc = await run_in_threadpool(P.light_curve, app.db, target_id, band, limit=limit or lc_max,
                                     after_id=after_id,
                                     columns=None if columns is None else [c.strip() for c in columns.split(",")])
        if format == "json":
            return Response(await run_in_threadpool(P.light_curve_json, lc), media_type="application/json")
        tname = (await run_in_threadpool(P.get_target, app.db, target_id))["name"]
        stem = f"{_slug(tname)}_{_slug(band)}_lightcurve"
        if format == "csv":
            return _download(P.light_curve_csv(lc, tname), "csv", stem + ".csv")
        table = P.light_curve_table(lc, tname)
        return _download(await run_in_threadpool(P.table_bytes, table, format), format,
                         stem + (".fits" if format == "fits" else ".vot"))

    @router.get("/targets/{target_id}/periodogram", tags=["targets"],
                summary="Newest periodogram: best period (d), FAP, power spectrum (frequency in 1/d)")
    async def periodogram(target_id: Id, band: Annotated[str | None, Query(max_length=16)] = None) -> Response:
        body = await run_in_threadpool(P.periodogram, app.db, app.store, target_id, band)
        return Response(P.json_dumps(body), media_type="application/json")

    @router.get("/targets/{target_id}/transit-times", tags=["targets"],
                summary="Transit times (BJD_TDB), linear ephemeris and O-C (json or csv)")
    async def transit_times(target_id: Id, planet: Annotated[str | None, Query(max_length=32)] = None,
                            format: Literal["json", "csv"] = "json") -> Response:
        tt = await run_in_threadpool(P.transit_times, app.db, target_id, planet)
        if format == "csv":
            return _download(P.transit_times_csv(tt), "csv", f"target{target_id}_{_slug(tt['planet'])}_oc.csv")
        return Response(P.json_dumps(tt), media_type="application/json")

    # --- observations (logged-in) ------------------------------------------------------------------------
    @router.get("/observations", tags=["observations"], summary="Observations (log in as scientist or admin)")
    async def observations(reader: ReaderDep, target_id: Annotated[int | None, Query(ge=1)] = None,
                           site_id: Annotated[int | None, Query(ge=1)] = None,
                           status: Annotated[str | None, Query(max_length=32)] = None,
                           limit: Limit = 50, offset: Offset = 0) -> dict:
        require_user(reader)
        page = await run_in_threadpool(P.list_observations, app.db, target_id=target_id, site_id=site_id,
                                       status=status, limit=limit, offset=offset)
        return page.to_dict()

    # --- campaigns ------------------------------------------------------------------------------------------
    @router.get("/campaigns", tags=["campaigns"], summary="Campaigns (anonymous: finished ones only)")
    async def campaigns(reader: ReaderDep, status: Annotated[str | None, Query(max_length=16)] = None,
                        kind: Annotated[Literal["ttv", "stack"] | None, Query()] = None,
                        limit: Limit = 50, offset: Offset = 0) -> dict:
        page = await run_in_threadpool(P.list_campaigns, app.db, published_only=reader.published_only,
                                       status=status, kind=kind, limit=limit, offset=offset)
        return page.to_dict()

    @router.get("/campaigns/{campaign_id}", tags=["campaigns"],
                summary="Bins with ln Z and P(bin), progress, posterior medians and 68% intervals")
    async def campaign(campaign_id: Id, reader: ReaderDep) -> Response:
        body = await run_in_threadpool(P.campaign_detail, app, campaign_id, published_only=reader.published_only)
        return Response(P.json_dumps(body), media_type="application/json")

    def _posterior(campaign_id: int, reader: Reader):
        from server.boinc.campaigns import CampaignError, load_posterior

        P.campaign_detail(app, campaign_id, published_only=reader.published_only)  # visibility
        try:
            return load_posterior(app, campaign_id)
        except CampaignError as exc:
            raise P.NotFound(str(exc)) from None

    @router.get("/campaigns/{campaign_id}/posterior", tags=["campaigns"],
                summary="Merged posterior samples (csv, npz, fits)")
    async def posterior(campaign_id: Id, reader: ReaderDep,
                        format: Literal["csv", "npz", "fits"] = "csv") -> Response:
        names, samples, summary = await run_in_threadpool(_posterior, campaign_id, reader)
        stem = f"campaign{campaign_id}_posterior"
        if format == "csv":
            lines = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in samples]
            return _download("\n".join(lines) + "\n", "csv", stem + ".csv")
        if format == "npz":
            buf = io.BytesIO()
            np.savez_compressed(buf, samples=samples, param_names=np.asarray(names))
            return _download(buf.getvalue(), "npz", stem + ".npz")
        from astropy.table import Table

        table = Table(samples, names=names)
        table.meta["CAMPAIGN"] = campaign_id
        if summary.get("log_evidence") is not None:
            table.meta["LOGZ"] = float(summary["log_evidence"])
        return _download(await run_in_threadpool(P.table_bytes, table, "fits"), "fits", stem + ".fits")

    @router.get("/campaigns/{campaign_id}/corner.png", tags=["campaigns"],
                summary="Corner plot with medians and 68% intervals marked")
    async def corner(campaign_id: Id, reader: ReaderDep) -> Response:
        from server.web.plots import corner_png

        names, samples, _ = await run_in_threadpool(_posterior, campaign_id, reader)
        png = await run_in_threadpool(corner_png, names, samples)
        return Response(png, media_type="image/png")

    # --- stacks ---------------------------------------------------------------------------------------------
    @router.get("/stacks", tags=["stacks"], summary="Stacks (anonymous: finished ones only)")
    async def stacks(reader: ReaderDep, target_id: Annotated[int | None, Query(ge=1)] = None,
                     limit: Limit = 50, offset: Offset = 0) -> dict:
        page = await run_in_threadpool(P.list_stacks, app.db, published_only=reader.published_only,
                                       target_id=target_id, limit=limit, offset=offset)
        return page.to_dict()

    @router.get("/stacks/{stack_id}", tags=["stacks"], summary="One stack: grid WCS header, products")
    async def stack(stack_id: Id, reader: ReaderDep) -> dict:
        row = await run_in_threadpool(P.get_stack, app.db, stack_id, published_only=reader.published_only)
        row.pop("keys")
        return row

    @router.get("/stacks/{stack_id}/{product}.fits", tags=["stacks"],
                summary="Stacked image, uncertainty or coverage as FITS (with WCS); HTTP Range supported")
    async def stack_file(stack_id: Id, product: Literal["stacked", "uncertainty", "coverage"],
                         reader: ReaderDep) -> Response:
        row = await run_in_threadpool(P.get_stack, app.db, stack_id, published_only=reader.published_only)
        key = row["keys"].get(product)
        if not key:
            raise P.NotFound(f"stack {stack_id} has no {product} image (status {row['status']})")
        path = await run_in_threadpool(app.store.path, key)
        if not os.path.exists(path):
            raise P.NotFound(f"stack {stack_id}'s {product} image is missing from the store")
        return FileResponse(path, media_type="application/fits", filename=f"stack{stack_id}_{product}.fits")

    @router.get("/stacks/{stack_id}/preview.png", tags=["stacks"], summary="Preview: ZScale + arcsinh stretch")
    async def stack_preview(stack_id: Id, reader: ReaderDep) -> Response:
        from astropy.io import fits

        from server.web.plots import preview_png

        row = await run_in_threadpool(P.get_stack, app.db, stack_id, published_only=reader.published_only)
        if not row["keys"].get("stacked"):
            raise P.NotFound(f"stack {stack_id} has no stacked image yet (status {row['status']})")

        def render() -> bytes:
            with fits.open(app.store.path(row["keys"]["stacked"]), memmap=False) as hdul:
                hdu = next(h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim == 2)
                return preview_png(hdu.data)

        return Response(await run_in_threadpool(render), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    # --- admin ----------------------------------------------------------------------------------------------
    @router.get("/admin/queue", tags=["admin"], summary="Work units by state, running campaigns, BOINC status")
    async def queue(reader: ReaderDep) -> dict:
        require_admin(reader)
        return await run_in_threadpool(queue_status, app, runner)

    @router.post("/admin/campaigns", tags=["admin"], status_code=201,
                 summary="Launch a TTV campaign: transit-time CSV + priors (TOML/JSON)")
    async def launch(reader: ReaderDep, times: Annotated[UploadFile, File()], priors: Annotated[UploadFile, File()],
                     name: Annotated[str, Form(max_length=120)] = "",
                     replicas: Annotated[int, Form(ge=1, le=2)] = 2,
                     bins: Annotated[str, Form(max_length=4000)] = "auto",
                     executor: Annotated[Literal["local", "boinc", ""], Form()] = "",
                     seed: Annotated[int | None, Form()] = None,
                     x_csrf_token: Annotated[str | None, Header()] = None) -> JSONResponse:
        check_csrf(require_admin(reader), x_csrf_token)
        launched = await launch_from_upload(runner=runner, times=times, priors=priors, name=name,
                                            replicas=replicas, bins=bins, executor=executor or None, seed=seed)
        return JSONResponse({"campaign_id": launched.campaign_id, "bins": launched.n_bins,
                             "executor": launched.executor}, status_code=201,
                            headers={"Location": f"{API_PREFIX}/campaigns/{launched.campaign_id}"})

    @router.post("/admin/campaigns/{campaign_id}/cancel", tags=["admin"], summary="Cancel a campaign")
    async def cancel(campaign_id: Id, reader: ReaderDep,
                     x_csrf_token: Annotated[str | None, Header()] = None) -> dict:
        check_csrf(require_admin(reader), x_csrf_token)
        n = await run_in_threadpool(_cancel, runner, campaign_id)
        return {"campaign_id": campaign_id, "cancelled_work_units": n}

    return router


def _cancel(runner, campaign_id: int) -> int:
    from server.boinc.campaigns import CampaignError

    try:
        return runner.cancel(campaign_id)
    except CampaignError as exc:
        if "no campaign" in str(exc):
            raise P.NotFound(str(exc)) from None
        raise P.BadParameter(str(exc)) from None


async def launch_from_upload(*, runner, times: UploadFile, priors: UploadFile, name: str, replicas: int,
                             bins: str, executor: str | None, seed: int | None):
    import json

    from server.boinc.campaigns import CampaignError

    times_bytes = await times.read(8 * 1024 * 1024 + 1)
    priors_bytes = await priors.read(1024 * 1024 + 1)
    if len(times_bytes) > 8 * 1024 * 1024 or len(priors_bytes) > 1024 * 1024:
        raise P.BadParameter("the transit-time table must be under 8 MiB and the priors under 1 MiB")
    suffix = os.path.splitext(priors.filename or "")[1].lower() or ".toml"
    try:
        bins_value = "auto" if bins.strip() in ("", "auto") else json.loads(bins)
    except json.JSONDecodeError:
        raise P.BadParameter(f"bins must be 'auto' or JSON [[lo, hi], ...] in days, got {bins!r}") from None
    try:
        priors_text = priors_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise P.BadParameter("the priors file is not UTF-8 text") from None
    try:
        return await run_in_threadpool(runner.launch_ttv, times_bytes, priors_text, suffix,
                                       name=name.strip() or None, replicas=replicas, bins=bins_value,
                                       executor=executor, seed=seed, times_name=times.filename or "times.csv",
                                       priors_name=priors.filename or "priors")
    except (CampaignError, ValueError, TypeError, KeyError) as exc:
        raise P.BadParameter(str(exc)) from None


def queue_status(app, runner) -> dict:
    """Work units by state over all campaigns, the campaigns running in this server, and the BOINC project."""
    from server.boinc.campaigns import work_unit_table

    rows = work_unit_table(app)
    totals: dict[str, int] = {}
    for r in rows:
        for k, v in r["counts"].items():
            totals[k] = totals.get(k, 0) + v
    boinc_dir = app.settings.boinc_project_dir
    return {"work_units": totals, "campaigns": rows[-50:], "running_here": runner.running(),
            "executor": app.settings.executor, "broker_url_set": bool(app.settings.broker_url),
            "boinc": {"project_dir": boinc_dir or None,
                      "configured": bool(boinc_dir) and os.path.isdir(boinc_dir)}}
