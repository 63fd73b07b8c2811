"""Evaluate how robust a model's attributions are over a data loader."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_robust._utils.validation import check_choice, check_positive_int
from captum_robust.evaluation._distributed import (
    gather_objects,
    rank_and_world,
    rank_files,
    rank_path,
    shard_loader,
    synchronize,
)
from captum_robust.evaluation._records import (
    Record,
    RecordLog,
    check_records_path,
    read_records,
)
from captum_robust.evaluation._summary import summarize
from captum_robust.metrics import (
    center_of_mass_shift,
    kendall_tau,
    silhouette_overlap,
    spearman_correlation,
    topk_intersection,
)

METRICS = ("topk", "kendall", "spearman", "center_shift", "silhouette")


@dataclass
class EvaluationResult:
    """Per-sample records and their aggregates.

    Attributes
    ----------
    records : list of dict
        One record per sample, in data order: ``index``, ``label``,
        ``prediction``, ``correct``, ``label_kept``, ``linf`` (size of the
        perturbation) and one entry per metric (``silhouette`` gives
        ``silhouette_before`` and ``silhouette_after``).
    summary : dict
        For each metric, the mean with its spread and confidence interval over
        the correctly classified samples (see :func:`summarize`), plus
        ``clean_accuracy`` and ``label_kept_rate``.
    figure_paths : list of Path
        PNG figures written, if any.
    """

    records: list[Record]
    summary: dict[str, Any]
    figure_paths: list[Path] = field(default_factory=list)


def _split_batch(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"], batch.get("mask")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, labels = batch[0], batch[1]
        masks = batch[2] if len(batch) == 3 else None
        return images, labels, masks
    raise TypeError(
        "`loader` must yield (inputs, labels) or (inputs, labels, masks) batches, "
        f"got {type(batch).__name__}."
    )


def _run_attack(attack: Any, inputs: Tensor, labels: Tensor) -> Tensor:
    perturb = getattr(attack, "perturb", attack)
    perturbed = perturb(inputs, target=labels)
    if not isinstance(perturbed, Tensor) or perturbed.shape != inputs.shape:
        raise TypeError(
            "`attack` must return a Tensor shaped like the inputs, got "
            f"{type(perturbed).__name__}."
        )
    return perturbed.detach()


def _attribute(attribution: Any, inputs: Tensor, labels: Tensor, **kwargs) -> Tensor:
    attribute = getattr(attribution, "attribute", attribution)
    with warnings.catch_warnings():
        # Captum warns each time it switches on requires_grad of fresh inputs.
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already")
        result = attribute(inputs, target=labels, **kwargs)
    if not isinstance(result, Tensor):
        raise TypeError(
            "`attribution` must return one Tensor for image inputs, got "
            f"{type(result).__name__}."
        )
    return result.detach()


def _batch_scores(
    metrics: Sequence[str],
    before: Tensor,
    after: Tensor,
    masks: Tensor | None,
    k: int,
) -> dict[str, Tensor]:
    scores: dict[str, Tensor] = {}
    if "topk" in metrics:
        scores["topk"] = topk_intersection(before, after, k)
    if "kendall" in metrics:
        scores["kendall"] = kendall_tau(before, after)
    if "spearman" in metrics:
        scores["spearman"] = spearman_correlation(before, after)
    if "center_shift" in metrics:
        scores["center_shift"] = center_of_mass_shift(before, after)
    if "silhouette" in metrics and masks is not None:
        scores["silhouette_before"] = silhouette_overlap(before, masks)
        scores["silhouette_after"] = silhouette_overlap(after, masks)
    return scores


def evaluate_robustness(
    model: nn.Module,
    loader: Iterable[Any],
    attribution: Any,
    attack: Any,
    metrics: Sequence[str] = METRICS,
    *,
    k: int = 100,
    attribution_kwargs: dict[str, Any] | None = None,
    records_path: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    figures_dir: str | Path | None = None,
    num_figures: int = 8,
    confidence: float = 0.95,
    progress: bool = True,
    description: str = "evaluating",
    on_batch: Callable[[list[Record]], None] | None = None,
) -> EvaluationResult:
    """Attack every batch of a loader and score how much the attributions move.

    For each batch: the model's predictions, the attribution of the inputs, the
    attack, the attribution of the perturbed inputs, and the metrics between
    the two maps (plus silhouette overlap before and after when the loader
    yields masks). Per-sample records are appended to a JSON-lines file as they
    are produced; with ``resume=True`` a run that was interrupted continues
    where it stopped, without losing or repeating a record.

    Parameters
    ----------
    model : nn.Module
        The classifier. It is put in eval mode during the evaluation and its mode
        is restored afterwards.
    loader : iterable
        Yields ``(inputs, labels)`` or ``(inputs, labels, masks)``, in the same
        order on every run (``shuffle=False``) so that resuming is possible.
    attribution : Captum attribution or callable
        Computes the maps that are compared, e.g. ``Saliency(model)``.
    attack : captum.robust.Perturbation or callable
        Called as ``attack.perturb(inputs, target=labels)`` (or
        ``attack(inputs, target=labels)``), e.g. a
        :class:`captum_robust.attacks.TopKAttack`.
    metrics : sequence of str
        Any of "topk", "kendall", "spearman", "center_shift", "silhouette".
    k : int, default 100
        k of the top-k intersection.
    attribution_kwargs : dict, optional
        Passed to ``attribution.attribute`` (e.g. ``{"n_steps": 50}``).
    records_path : str or Path, optional
        JSON-lines file of per-sample records.
    resume : bool, default False
        Keep the records already in ``records_path`` (and in the rank files of
        a distributed run beside it) and skip their samples.
    device : str or torch.device, optional
        Where batches are moved; defaults to the model's device.
    figures_dir : str or Path, optional
        Where a PNG of the first correctly classified samples is written.
    num_figures : int, default 8
        Samples in that figure.
    confidence : float, default 0.95
        Level of the confidence intervals in the summary.
    progress : bool, default True
        Show a progress bar.
    description : str, default "evaluating"
        Label of the progress bar.
    on_batch : callable, optional
        Called with each batch's new records after they are written.

    Returns
    -------
    EvaluationResult

    Notes
    -----
    Under ``torch.distributed`` (e.g. ``torchrun``) with ``loader`` a
    ``DataLoader``, each rank evaluates every N-th sample of the order in which
    the loader reads its data in one process, keeps its records in its own file
    (``records.rank1.jsonl``) and returns the records and summary of the whole
    data set; rank 0 writes the merged ``records_path`` and the figure, and no
    rank returns before the merged file is written. Resuming reads the merged
    file and every rank's file, so a run may be continued with another number of
    processes; a fresh run removes the rank files earlier runs left beside
    ``records_path``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.evaluation import evaluate_robustness
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    >>> data = [(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))]
    >>> def jitter(inputs, target):
    ...     return (inputs + 0.01).clamp(0, 1)
    >>> result = evaluate_robustness(
    ...     model, data, Saliency(model), jitter, ["topk"], k=10, progress=False
    ... )
    >>> len(result.records), sorted(result.summary)
    (4, ['clean_accuracy', 'correct', 'label_kept_rate', 'samples', 'topk'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
    if isinstance(metrics, str):
        raise TypeError("`metrics` must be a sequence of metric names, not a str.")
    for name in metrics:
        check_choice(name, METRICS, "metrics")
    check_positive_int(k, "k")
    check_positive_int(num_figures, "num_figures")
    if not (callable(attack) or hasattr(attack, "perturb")):
        raise TypeError(f"`attack` must be callable, got {type(attack).__name__}.")
    if not (callable(attribution) or hasattr(attribution, "attribute")):
        raise TypeError(
            f"`attribution` must be a Captum attribution or a callable, got "
            f"{type(attribution).__name__}."
        )
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    attribution_kwargs = dict(attribution_kwargs or {})
    rank, world = rank_and_world()
    if world > 1:
        loader, batch_indices = shard_loader(loader, rank, world)
        shard = {i for batch in batch_indices for i in batch}
    else:
        batch_indices, shard = None, None
    log = _open_records(records_path, resume, rank, world, shard)
    figure_batch: dict[str, list[Tensor]] = {}
    # Only the first rank draws figures: one figure per evaluation.
    figures = num_figures if figures_dir is not None and rank == 0 else 0

    def run(batch: Any, indices: list[int]) -> list[Record]:
        images, labels, masks = _split_batch(batch)
        images, labels = images.to(device), labels.to(device)
        masks = None if masks is None else masks.to(device)
        return _evaluate_batch(
            model,
            attribution,
            attack,
            metrics,
            images,
            labels,
            masks,
            k,
            attribution_kwargs,
            indices,
            figure_batch,
            figures,
        )

    first_batch = None
    was_training = model.training
    model.eval()
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = tqdm(
            loader, total=total, desc=description, disable=not progress or rank != 0
        )
        start = 0
        for number, batch in enumerate(bar):
            labels = _split_batch(batch)[1]
            if batch_indices is None:
                indices = list(range(start, start + int(labels.shape[0])))
                start += len(indices)
            else:
                indices = batch_indices[number]
            _check_resumed_labels(log, indices, labels)
            if first_batch is None:
                first_batch = (batch, indices)
            if all(i in log.records for i in indices):
                continue
            new = [r for r in run(batch, indices) if r["index"] not in log.records]
            log.write(new)
            if on_batch is not None and new:
                on_batch(new)
        if figures and not figure_batch and first_batch is not None:
            # Every batch was resumed from disk: recompute one for the figure.
            run(*first_batch)
    finally:
        model.train(was_training)

    records = _merge_ranks(log.sorted_records(), records_path, world)
    summary = summarize(records, metrics, confidence=confidence)
    figure_paths = []
    if figures_dir is not None and figure_batch:
        figure_paths.append(_write_figure(figure_batch, Path(figures_dir)))
    return EvaluationResult(records=records, summary=summary, figure_paths=figure_paths)


def _open_records(
    records_path: str | Path | None,
    resume: bool,
    rank: int,
    world: int,
    shard: set[int] | None,
) -> RecordLog:
    """This rank's record file, holding what earlier runs left for its shard.

    Resuming reads the merged file and every rank's file, so a run can go on
    with another number of processes (or in one) without losing or repeating
    a record. A fresh run removes the files of earlier runs that it would not
    overwrite, so that a later resume cannot pick up their records.
    """
    check_records_path(records_path)
    if records_path is None:
        return RecordLog(None)
    own = rank_path(records_path, rank, world)
    merged = Path(records_path)
    siblings = rank_files(merged)
    previous: dict[int, Record] = {}
    if resume:
        for path in (merged, *siblings.values()):
            previous.update(read_records(path))
        if shard is not None:
            previous = {i: r for i, r in previous.items() if i in shard}
    # Every rank has read the files before any of them changes.
    synchronize(world)
    if not resume and rank == 0:
        stale = [path for r, path in siblings.items() if world == 1 or r >= world]
        if world > 1:
            stale.append(merged)
        for path in stale:
            path.unlink(missing_ok=True)
    log = RecordLog(own, resume=resume)
    if resume:
        log.rewrite([previous[i] for i in sorted(previous)])
    return log


def _merge_ranks(
    records: list[Record], records_path: str | Path | None, world: int
) -> list[Record]:
    """All ranks' records, sorted by index; the first rank writes them to one file."""
    if world == 1:
        return records
    gathered = gather_objects(records, world)
    merged = sorted((r for part in gathered for r in part), key=lambda r: r["index"])
    if records_path is not None and rank_and_world()[0] == 0:
        RecordLog(records_path).write(merged)
    # Every rank returns only once the merged file exists, and no rank leaves
    # the process group while another is still using it.
    synchronize(world)
    return merged


def _check_resumed_labels(log: RecordLog, indices: list[int], labels: Tensor) -> None:
    known = [(row, i) for row, i in enumerate(indices) if i in log.records]
    if not known:
        return
    host_labels = labels.tolist()
    for row, i in known:
        if log.records[i]["label"] != host_labels[row]:
            raise ValueError(
                f"`loader` yields label {host_labels[row]} for sample {i}, but the "
                f"records to resume say {log.records[i]['label']}; resuming needs "
                "the same data in the same order (shuffle=False)."
            )


def _evaluate_batch(
    model: nn.Module,
    attribution: Any,
    attack: Any,
    metrics: Sequence[str],
    images: Tensor,
    labels: Tensor,
    masks: Tensor | None,
    k: int,
    attribution_kwargs: dict[str, Any],
    indices: list[int],
    figure_batch: dict[str, list[Tensor]],
    num_figures: int,
) -> list[Record]:
    with torch.no_grad():
        prediction = model(images).argmax(dim=1)
    perturbed = _run_attack(attack, images, labels)
    with torch.no_grad():
        prediction_after = model(perturbed).argmax(dim=1)
    before = _attribute(attribution, images, labels, **attribution_kwargs)
    after = _attribute(attribution, perturbed, labels, **attribution_kwargs)
    scores = _batch_scores(metrics, before, after, masks, k)
    linf = (perturbed - images).flatten(1).abs().amax(dim=1)

    columns = {
        "label": labels,
        "prediction": prediction,
        "correct": prediction == labels,
        "label_kept": prediction_after == prediction,
        "linf": linf,
        **scores,
    }
    # One transfer per batch, after all the device work is queued.
    host = {name: values.tolist() for name, values in columns.items()}
    records = [
        {"index": index, **{name: host[name][row] for name in host}}
        for row, index in enumerate(indices)
    ]
    if num_figures:
        _collect_figure_samples(
            figure_batch, num_figures, images, perturbed, before, after, masks, records
        )
    return records


def _collect_figure_samples(
    figure_batch: dict[str, list[Tensor]],
    num_figures: int,
    images: Tensor,
    perturbed: Tensor,
    before: Tensor,
    after: Tensor,
    masks: Tensor | None,
    records: list[Record],
) -> None:
    have = sum(t.shape[0] for t in figure_batch.get("images", []))
    rows = [i for i, r in enumerate(records) if r["correct"]][: num_figures - have]
    if not rows:
        return
    index = torch.tensor(rows, device=images.device)
    parts = {"images": images, "perturbed": perturbed, "before": before, "after": after}
    if masks is not None:
        parts["masks"] = masks
    for name, tensor in parts.items():
        figure_batch.setdefault(name, []).append(tensor.index_select(0, index).cpu())
    titles = [f"sample {records[i]['index']}" for i in rows]
    figure_batch.setdefault("titles", []).extend(titles)


def _write_figure(figure_batch: dict[str, list[Any]], folder: Path) -> Path:
    from captum_robust.visualization import plot_attack_examples, save_figure

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: torch.cat(parts)
        for name, parts in figure_batch.items()
        if name != "titles"
    }
    figure = plot_attack_examples(
        tensors["images"],
        tensors["before"],
        tensors["after"],
        perturbed=tensors["perturbed"],
        masks=tensors.get("masks"),
        titles=figure_batch["titles"],
        max_samples=tensors["images"].shape[0],
    )
    path = folder / "examples.png"
    save_figure(figure, str(path))
    return path
