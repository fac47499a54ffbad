"""Train a model on a dataset folder (from 'classranker make-dataset'), or fine-tune one.

Writes in --o: model.pt (best validation AUC, calibrated, usable with 'classranker score --model'),
last.pt (resumable state; --resume continues an interrupted run to the same result), metrics.csv and
metrics.png. Runs on the GPU when there is one (mixed precision); for several GPUs start it with
torchrun, e.g. 'torchrun --nproc_per_node=4 $(which classranker) train ...'.

With --job-head, model.pt then gets a job head (as the bundled model has; a fine-tuned network
otherwise has none), fitted on the dataset's jobs with the trained network's logits; --calibrate-head
adds its per-job calibration. Give it jobs with several classes each; on the training jobs the network's
logits are more confident than on new ones, so check the head on a labelled job of your own
('classranker evaluate').
"""
from __future__ import annotations

import os
import sys


def add_args(parser):
    parser.add_argument("--dataset", required=True, help="dataset folder")
    parser.add_argument("--o", "--output", dest="output", required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--init", help="checkpoint to fine-tune (its features must be the dataset's)")
    parser.add_argument("--freeze-cnn", action="store_true", help="keep the CNN of --init fixed")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --o")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a "
                        "better validation AUC (0: never)")
    parser.add_argument("--arch", choices=["classranker", "relion"], help="network (default classranker)")
    parser.add_argument("--balance", default="loss", choices=["loss", "sampler", "none"],
                        help="class balance: weighted loss, balanced sampling, or none")
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "plateau"])
    parser.add_argument("--mask-metadata", type=float, default=0.3,
                        help="probability of hiding a class's metadata features during training")
    parser.add_argument("--label-noise", type=float, default=0.0,
                        help="flip this share of the training labels (robustness experiments)")
    parser.add_argument("--no-augment", action="store_true", help="no rotations, flips or shifts")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--job-head", action="store_true", help="fit a job head on the dataset's jobs into model.pt")
    parser.add_argument("--calibrate-head", action="store_true",
                        help="with --job-head: give the head its per-job calibration")


def main(args) -> int:
    import torch

    from ..training.trainer import train
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(args.dataset, args.output, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    device=args.device, init=args.init, freeze_cnn=args.freeze_cnn, resume=args.resume,
                    seed=args.seed, patience=args.patience, weight_decay=args.weight_decay,
                    balance=args.balance, schedule=args.schedule, augment=not args.no_augment,
                    mask_metadata=args.mask_metadata, amp=not args.no_amp, arch=args.arch,
                    label_noise=args.label_noise,
                    progress=not args.quiet, command_line=" ".join(["classranker"] + sys.argv[1:]))
    best = summary["best"]
    if args.job_head and int(os.environ.get("RANK", "0")) == 0:
        head, n_jobs = add_job_head(args.dataset, summary["model"], calibrate=args.calibrate_head)
        print(f"job head fitted on {n_jobs} jobs (each also without metadata)"
              f"{', with its calibration' if head.calibration is not None else ''}; in {summary['model']}")
    if int(os.environ.get("RANK", "0")) == 0 and best.get("epoch", -1) >= 0 and "temperature" in best:
        print(f"best epoch {best['epoch'] + 1}: validation AUC {best['val_auc']:.3f}, at cutoff 0.5 precision "
              f"{best.get('precision_at_cutoff', float('nan')):.3f} recall {best.get('recall_at_cutoff', float('nan')):.3f} "
              f"(temperature {best['temperature']:.2f}); model: {summary['model']}")
    return 0


def add_job_head(dataset, model, calibrate: bool = False):
    """Fit a job head (``calibrate``: with its per-job calibration) on ``dataset``'s jobs with
    ``model``'s network, written into ``model``; (head, number of jobs)."""
    from pathlib import Path

    from ..checkpoint import load_model
    from ..training.job_head_fit import fit_head
    from ..training.real_stage import corpus_records, with_job_head

    records, names = corpus_records(Path(dataset), load_model(model, device="cpu"))
    head = fit_head(records, names, calibrate=calibrate)
    with_job_head(model, head, model)
    return head, len(records) // 2        # corpus_records gives each job with and without metadata
