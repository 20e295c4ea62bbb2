"""Cost of the dialog CVAE example at the size ``compare.py`` trains: a training step and a validation pass.

    python benchmarks/dialog_step.py [--steps 60] [--context-turns 3] [--batch-size 32] [--bow-weight 1]

One torch thread, the small preset, the built-in corpus. A training step is what the Trainer runs per
batch (forward, backward, gradient clipping at 5, Adam) on batches from the compare run's training
loader; a validation pass is ``DialogCVAE``'s validation over ``--num-valid`` examples with the generation
metrics on ``--val-gen-contexts`` of them (greedy decoding of 5 samples per context and BLEU). Times are
CPU time (``time.process_time``), which other jobs on a shared machine disturb less than wall time;
the median over steps is printed, with the response and context lengths the batches had.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from examples.dialog_cvae.data import DialogDataModule
from examples.dialog_cvae.model import SMALL_PRESET, DialogCVAE, _select


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--context-turns", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bow-weight", type=float, default=1.0)
    p.add_argument("--num-valid", type=int, default=300)
    p.add_argument("--val-gen-contexts", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dm = DialogDataModule(batch_size=args.batch_size, context_turns=args.context_turns, num_valid=args.num_valid)
    dm.setup("fit")
    model = DialogCVAE(
        vocab_size=dm.vocab_size,
        bow_weight=args.bow_weight,
        max_decode_len=dm.max_len,
        val_gen_contexts=args.val_gen_contexts,
        **SMALL_PRESET,
    )
    model.word_vectors = dm.word_vectors
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches, times = iter(dm.train_dataloader()), []
    resp_len, ctx_len = [], []
    for i in range(args.steps + 5):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(dm.train_dataloader())
            batch = next(batches)
        t = time.process_time()
        loss, _, _, _ = model._shared_step(batch, "train")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i >= 5:  # the first steps allocate
            times.append(time.process_time() - t)
            resp_len.append(batch["response"].shape[1])
            ctx_len.append(batch["context"].shape[1] * batch["context"].shape[2])
    model.eval()
    t = time.process_time()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            model._shared_step(batch, "val")
            rows = torch.arange(len(batch["label"]))[batch["index"] < args.val_gen_contexts]
            if len(rows):
                sub = _select(batch, rows)
                c = model.encode_context(sub)
                model.generation_metrics(c, sub, "val")
    val_s = time.process_time() - t
    out = {
        "train_step_ms": 1000 * statistics.median(times),
        "validation_pass_s": val_s,
        "response_len_padded": statistics.fmean(resp_len),
        "context_tokens_padded": statistics.fmean(ctx_len),
        "max_len": dm.max_len,
        "vocab_size": dm.vocab_size,
    }
    print(
        f"train step {out['train_step_ms']:.1f} ms (median of {len(times)}, CPU time, 1 thread); "
        f"validation pass ({args.num_valid} examples, generation on {args.val_gen_contexts}) {val_s:.2f} s; "
        f"padded response length {out['response_len_padded']:.1f}, context tokens per example "
        f"{out['context_tokens_padded']:.1f} (turns x longest utterance); vocabulary {dm.vocab_size}"
    )
    return out


if __name__ == "__main__":
    main()
