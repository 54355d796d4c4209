"""Admin actions that outlive a request: launching a TTV campaign and running it in the background.

Launch uses the same functions as ``openastro campaign launch`` (:mod:`server.boinc.campaigns`): the transit-time
table is read by :func:`server.timeseries.transit_times.load_transit_time_table`, the priors by
:func:`server.core.configfile.read_config_file`, the config planned by ``ttv_campaign_config``. A local campaign
then runs to completion on the local executor in a daemon thread of the server (the CLI's local path); a BOINC
campaign's work units are submitted the same way. Cancelling calls ``cancel_campaign``; the local executor sees the
cancelled work units and starts no more.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass

log = logging.getLogger("openastro.portal")


@dataclass(frozen=True)
class Launched:
    campaign_id: int
    n_bins: int
    executor: str


class CampaignRunner:
    """Runs launched campaigns in background threads, one thread per campaign."""

    def __init__(self, app) -> None:
        self.app = app
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def launch_ttv(self, times_csv: bytes, priors_text: str, priors_suffix: str, *, name: str | None = None,
                   replicas: int = 2, bins: list | str = "auto", executor: str | None = None,
                   seed: int | None = None, start: bool = True, times_name: str = "times.csv",
                   priors_name: str = "priors") -> Launched:
        """Create a TTV campaign from a transit-time CSV and a prior config (TOML or JSON text); ValueError
        (with the reason) for bad inputs. ``start``: run it now in the background."""
        from server.boinc.campaigns import create_campaign, ttv_campaign_config
        from server.core.configfile import read_config_file
        from server.timeseries.transit_times import load_transit_time_table

        if priors_suffix not in (".toml", ".json"):
            raise ValueError(f"priors must be TOML or JSON, got a {priors_suffix!r} file")
        work = self.app.work_dir("portal-uploads")
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            times_path = os.path.join(tmp, "times.csv")
            priors_path = os.path.join(tmp, "priors" + priors_suffix)
            with open(times_path, "wb") as fh:
                fh.write(times_csv)
            with open(priors_path, "w", encoding="utf-8") as fh:
                fh.write(priors_text)
            try:
                prior_config = read_config_file(priors_path)
                table = load_transit_time_table(times_path)
            except ValueError as exc:  # name the uploaded files, not our temp paths
                raise ValueError(str(exc).replace(times_path, repr(times_name))
                                 .replace(priors_path, repr(priors_name))) from None
        config = ttv_campaign_config(table, prior_config, replicas=replicas, bins=bins)
        executor = executor or self.app.settings.executor
        cid = create_campaign(self.app, name or None, "ttv", config, executor=executor, seed=seed)
        if start:
            self.start(cid)
        return Launched(cid, len(config["bins"]), executor)

    def start(self, campaign_id: int) -> None:
        with self._lock:
            running = self._threads.get(campaign_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(target=self._run, args=(campaign_id,), name=f"campaign-{campaign_id}",
                                      daemon=True)
            self._threads[campaign_id] = thread
            thread.start()

    def running(self) -> list[int]:
        with self._lock:
            return sorted(cid for cid, t in self._threads.items() if t.is_alive())

    def _run(self, campaign_id: int) -> None:
        from server.boinc.campaigns import run_campaign

        try:
            result = run_campaign(self.app, campaign_id, echo=log.info)
            log.info("campaign %d: %s", campaign_id, result)
        except Exception:  # noqa: BLE001 - a background run has no caller to raise to; its status shows the failure
            log.exception("campaign %d failed in the background", campaign_id)

    def cancel(self, campaign_id: int) -> int:
        from server.boinc.campaigns import cancel_campaign

        return cancel_campaign(self.app, campaign_id)
