"""Training and evaluation: dataset builder, trainer, metrics and baselines.

Installed as ``classranker_plugin.training``. The modules, each with one job:

=============== ================================================================================
module          job
=============== ================================================================================
sources         label sources: simulated jobs (truth.csv), a job with a labels CSV, a ClassSet with
                the classes a user kept by hand (ClassSetSource)
star_source     label source: RELION's training-format STAR
dataset_source  label source: a dataset folder already built (e.g. data/relion_corpus/train)
dataset         ``build_dataset`` (streams one source at a time into memory-mapped .npy files)
                and ``load_dataset``
augment         batch augmentation in torch (90 degree and arbitrary rotations, flips, shifts) and
                masking of metadata features
masking         which features are metadata and their 'unknown' encoding, per feature set
trainer         ``train``: the training run (AMP, class balance, early stopping, checkpoints)
loop            one epoch of training, one pass of validation, batch sampling
state           the resumable training state (last.pt), history and metrics.csv / metrics.png
results         per-epoch records, choice of the best epoch, writing model.pt
calibration     temperature scaling on the validation split
distributed     torchrun / DDP helpers
metrics         ROC/PR AUC, MCC, thresholds, reliability table (numpy only)
baselines       trivial rankers: class distribution, resolution, particle count, empty-class heuristic
evaluation      ``evaluate``: a model against labels and the baselines, with CSV/JSON/PNG outputs
plots           the evaluation plots
=============== ================================================================================

Import the submodules directly (``from classranker_plugin.training.dataset import build_dataset``);
this package imports nothing heavy on its own.
"""
