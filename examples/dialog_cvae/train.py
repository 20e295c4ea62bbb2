"""Train the dialog CVAE with LightningCLI; every hyperparameter is a flag or a YAML key.

    python examples/dialog_cvae/train.py fit                  # small model, built-in corpus, cyclical beta (config.yaml)
    python examples/dialog_cvae/train.py fit --model.bow_weight 0 --trainer.max_steps 5000   # the plain CVAE
    python examples/dialog_cvae/train.py fit --config examples/dialog_cvae/paper.yaml --data.data_dir ~/data/dailydialog
    python examples/dialog_cvae/train.py fit --print_config   # everything, as YAML

``config.yaml`` next to this file is loaded first (sizes of :data:`~examples.dialog_cvae.model.SMALL_PRESET`,
the cyclical schedule of ``compare.py`` as a ``CyclicalKLAnnealing`` callback); ``--config`` files and
flags override it (``paper.yaml``: the paper's sizes, BoW loss and schedule). The vocabulary size is linked
from the data module, so it is never given by hand. Logs go to ``runs/dialog_cvae/cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.dialog_cvae` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from examples.dialog_cvae.data import DialogDataModule
from examples.dialog_cvae.model import DialogCVAE

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")


class DialogCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module reads the corpus and builds the vocabulary when first asked for its size.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")


def main(args: list[str] | None = None) -> DialogCLI:
    subcommands = ("fit", "validate", "test", "predict")
    return DialogCLI(
        DialogCVAE,
        DialogDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={cmd: {"default_config_files": [str(DEFAULT_CONFIG)]} for cmd in subcommands},
    )


if __name__ == "__main__":
    main()
