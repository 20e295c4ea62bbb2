"""One text VAE run from the command line or a YAML file, with LightningCLI.

    python examples/text_vae/train.py fit --trainer.max_epochs 10 \
        --trainer.callbacks+=lightning_kl_anneal.CyclicalKLAnnealing --trainer.callbacks.n_cycle 4

Every hyperparameter is a constructor argument of ``TextVAE`` (``--model.*``) or
``TextVAEDataModule`` (``--data.*``); ``model.vocab_size`` is linked from the data. Real data:
``--data.data_dir path/to/ptb`` and the paper's sizes (``--model.emb_dim 256`` etc. are the
defaults). The callback can also come from a config file (``--config run.yaml``)::

    trainer:
      max_epochs: 40
      gradient_clip_val: 5.0
      callbacks:
        - class_path: lightning_kl_anneal.CyclicalKLAnnealing
          init_args: {n_cycle: 4, ratio: 0.5, start: 0.1}
    model: {emb_dim: 256, hidden_dim: 256, latent_dim: 32}
    data: {data_dir: data/ptb}

Without any annealing callback the model trains at its ``beta`` (default 1.0): the constant-beta
baseline that shows KL vanishing. Any Lightning logger works (``--trainer.logger``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE


class TextVAECLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the vocabulary is only known once the data is read
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.set_defaults({"trainer.gradient_clip_val": 5.0})  # paper


def main(args: list[str] | None = None, run: bool = True) -> TextVAECLI:
    return TextVAECLI(TextVAE, TextVAEDataModule, args=args, run=run, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
