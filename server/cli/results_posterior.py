"""``openastro results posterior CAMPAIGN``: export a campaign's combined posterior (+ corner plot).

Defined here and attached to the ``results`` group by ``server/cli/results.py`` (one import line).
"""

from __future__ import annotations

import click


@click.command("posterior")
@click.argument("campaign_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["csv", "npz", "fits"]), default="csv", show_default=True)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: campaign_<ID>_posterior.<format>).")
@click.option("--corner", "corner", type=click.Path(dir_okay=False), default=None,
              help="Also write a corner plot of the perturber's parameters (.png, .pdf, .svg, ...).")
@click.pass_obj
def posterior(app, campaign_id: int, fmt: str, output: str | None, corner: str | None) -> None:
    """Equal-weight posterior samples of a TTV campaign, all bins combined by evidence."""
    from server.boinc.campaigns import CampaignError, corner_plot, export_posterior

    from server.core.plotformat import plot_format

    output = output or f"campaign_{campaign_id}_posterior.{fmt}"
    try:
        if corner:
            plot_format(corner)  # an unknown suffix is refused before anything is written
        export_posterior(app, campaign_id, fmt, output)
        if corner:
            corner_plot(app, campaign_id, corner)
    except (CampaignError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {output}" + (f" and {corner}" if corner else ""))
