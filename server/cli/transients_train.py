"""``openastro transients train``: train our real/bogus CNN on injected triplets and save it as plain data.

The command is attached to the ``transients`` group (server/cli/transients.py).
"""
from __future__ import annotations

import time

import click

from server.transients.classify import OPENASTRO_MODEL
from server.transients.train import TrainConfig, save_model, train as train_model

_DEFAULTS = TrainConfig()


@click.command("train")
@click.option("--out", type=click.Path(dir_okay=False), default=str(OPENASTRO_MODEL), show_default=True,
              help="Model file to write (JSON; the weights go beside it as .npz).")
@click.option("--n-train", type=int, default=_DEFAULTS.n_train, show_default=True, help="Injected training triplets.")
@click.option("--n-test", type=int, default=_DEFAULTS.n_test, show_default=True,
              help="Held-out injected triplets (other seed) for the ROC AUC.")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True)
@click.option("--learning-rate", type=float, default=_DEFAULTS.learning_rate, show_default=True, help="Adam step size.")
@click.option("--crop", type=int, default=_DEFAULTS.crop, show_default=True,
              help="Central crop of the 63x63 cutouts the model sees (odd).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds the training set, the held-out set and the weights (SeedSequence.spawn).")
def train(out: str, n_train: int, n_test: int, epochs: int, batch_size: int, learning_rate: float, crop: int,
          seed: int) -> None:
    """Train on injections (real: PSF point sources; bogus: cosmic rays, hot pixels, trails, dipoles, PSF
    mismatch, edges), print the held-out ROC AUC, and save the model (numpy, CPU)."""
    try:
        config = TrainConfig(n_train=n_train, n_test=n_test, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, crop=crop, seed=seed)
        start = time.perf_counter()
        result = train_model(config, log=click.echo)
        path = save_model(result, out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"held-out ROC AUC {result.test_auc:.4f} on {n_test} injections "
               f"({time.perf_counter() - start:.1f} s); model written to {path}")
