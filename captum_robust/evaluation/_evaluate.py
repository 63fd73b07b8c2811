"""Evaluate how robust a model's attributions are over a data loader."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.modes import eval_mode
from captum_robust._utils.progress import progress_bar as tqdm
from captum_robust._utils.targets import check_class_range
from captum_robust.evaluation._distributed import broadcast_object
from captum_robust.evaluation._distributed import gather_objects
from captum_robust.evaluation._distributed import rank_and_world
from captum_robust.evaluation._distributed import rank_files
from captum_robust.evaluation._distributed import rank_path
from captum_robust.evaluation._distributed import shard_loader
from captum_robust.evaluation._distributed import synchronize
from captum_robust.evaluation._evaluate_checks import check_evaluate_arguments
from captum_robust.evaluation._evaluate_checks import checked_batch
from captum_robust.evaluation._fingerprint import check_same_settings
from captum_robust.evaluation._fingerprint import describe
from captum_robust.evaluation._fingerprint import module_digest
from captum_robust.evaluation._fingerprint import sample_digest
from captum_robust.evaluation._records import Record
from captum_robust.evaluation._records import RecordLog
from captum_robust.evaluation._records import read_records
from captum_robust.evaluation._records import read_settings
from captum_robust.evaluation._records import write_settings
from captum_robust.evaluation._summary import METRIC_NAMES
from captum_robust.evaluation._summary import summarize
from captum_robust.metrics._registry import ScoreInputs
from captum_robust.metrics._registry import score_batch


@dataclass
class EvaluationResult:
    """Per-sample records and their aggregates.

    Attributes
    ----------
    records : list of dict
        One record per sample, in data order: ``index``, ``label``,
        ``prediction``, ``correct``, ``attacked`` (whether the sample counts in
        the summary), ``label_kept``, ``linf`` (size of the perturbation) and
        one entry per metric (``silhouette`` gives ``silhouette_before`` and
        ``silhouette_after``).
    summary : dict
        For each metric, the mean with its spread and confidence interval over
        the attacked samples (see :func:`summarize`), plus ``samples``,
        ``correct``, ``evaluated``, ``skipped``, ``clean_accuracy`` and
        ``label_kept_rate``.
    figure_paths : list of Path
        PNG figures written, if any.
    """

    records: list[Record]
    summary: dict[str, Any]
    figure_paths: list[Path] = field(default_factory=list)

    @property
    def num_evaluated(self) -> int:
        """Samples attacked and scored: the correctly classified ones with
        ``target="label"``, every one with ``target="predicted"``."""
        return int(self.summary["evaluated"])

    @property
    def num_skipped(self) -> int:
        """Samples left out of the summary (misclassified, with ``target="label"``)."""
        return int(self.summary["skipped"])


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


def evaluate_robustness(
    model: nn.Module,
    loader: Iterable[Any],
    attribution: Any,
    attack: Any,
    metrics: Sequence[str] = METRIC_NAMES,
    *,
    k: int = 100,
    attribution_kwargs: dict[str, Any] | None = None,
    target: str = "label",
    records_path: str | Path | None = None,
    resume: bool = False,
    run_settings: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    figures_dir: str | Path | None = None,
    num_figures: int = 8,
    confidence: float = 0.95,
    progress: bool = True,
    description: str = "evaluating",
    on_batch: Callable[[list[Record]], None] | None = None,
    certify: Mapping[str, Any] | None = None,
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
        The classifier. It is put in eval mode during the evaluation and the
        mode of every submodule is restored afterwards, also on an error.
    loader : iterable
        Yields ``(inputs, labels)`` or ``(inputs, labels, masks)`` (or dicts
        with ``image``, ``label`` and ``mask``), in the same order on every run
        (``shuffle=False``) so that resuming is possible. Inputs must be finite
        floating-point tensors; labels are class indices of the model's outputs.
    attribution : Captum attribution or callable
        Computes the maps that are compared, e.g. ``Saliency(model)``.
    attack : captum.robust.Perturbation or callable
        Called as ``attack.perturb(inputs, target=classes)`` (or
        ``attack(inputs, target=classes)``), e.g. a
        :class:`captum_robust.attacks.TopKAttack`.
    metrics : sequence of str
        Any of "topk", "kendall", "spearman", "center_shift", "silhouette"
        (the default), the map similarities "pearson", "cosine", "mse" and
        "ssim" (see :mod:`captum_robust.metrics`), and "certified" (with
        ``certify``).
    k : int, default 100
        k of the top-k intersection.
    attribution_kwargs : dict, optional
        Passed to ``attribution.attribute`` (e.g. ``{"n_steps": 50}``).
    target : {"label", "predicted"}, default "label"
        The class explained and attacked. "label": the true label; samples the
        model misclassifies are skipped (the attacks of
        :mod:`captum_robust.attacks` return them unchanged) and left out of the
        summary. "predicted": the model's predicted class; every sample is
        attacked and summarised. ``correct`` is recorded either way.
    records_path : str or Path, optional
        JSON-lines file of per-sample records. The settings that produced them
        are stored beside it, in ``<records_path>.settings.json``.
    resume : bool, default False
        Keep the records already in ``records_path`` (and in the rank files of
        a distributed run beside it) and skip their samples. Refused with a
        :class:`RecordsMismatchError` when those records were produced under
        other settings (see Notes).
    run_settings : mapping, optional
        Further JSON-serialisable settings that determine the records (a seed,
        a data subset, the options of a command line), bound into the records'
        settings like the others. Leave out what does not change a record (an
        output folder, the resume flag, a progress option): a resume with any
        other value is refused.
    device : str or torch.device, optional
        Where batches are moved; defaults to the model's device.
    figures_dir : str or Path, optional
        Where a PNG of the first attacked samples is written.
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
    certify : dict, optional
        Keyword arguments of
        :func:`~captum_robust.metrics.certified_topk_overlap` (``radius`` and
        ``sigma`` at least; not ``k``, which is the evaluation's, nor
        ``generator``: every batch draws from ``seed``): records "certified",
        the certified top-k overlap of the sparsified SmoothGrad map of
        ``attribution`` at the clean input, a guarantee beside what the attack
        found (it costs ``n_samples`` attribution calls per sample). The
        settings are part of the records' settings.

    Returns
    -------
    EvaluationResult
        With ``num_evaluated`` and ``num_skipped`` (also ``summary["evaluated"]``
        and ``summary["skipped"]``).

    Raises
    ------
    RecordsMismatchError
        With ``resume=True``, when the records on disk were produced under
        other settings, naming each setting that differs; or when they carry no
        settings (files of an earlier version).

    Notes
    -----
    The settings bound to the records are: the model's class and a hash of its
    state dict (weights and buffers), the attribution and the attack (class and
    public attributes, tensors and modules by hash), ``attribution_kwargs``,
    the metrics, ``k``, ``target``, the type of the data set and a hash of its
    first sample, and ``run_settings``. A resume over fewer samples than the
    records hold (a shorter loader) returns the records of those samples only,
    and the record file keeps only them. The labels of resumed samples are
    checked against the loader's, which catches most changes of order.

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
    ...     model, data, Saliency(model), jitter, ["topk"], k=10,
    ...     target="predicted", progress=False,
    ... )
    >>> len(result.records), result.num_evaluated, result.num_skipped
    (4, 4, 0)
    >>> sorted(result.summary)  # doctest: +NORMALIZE_WHITESPACE
    ['clean_accuracy', 'confidence', 'correct', 'evaluated', 'label_kept_rate',
     'samples', 'skipped', 'topk']
    """
    check_evaluate_arguments(
        model,
        attribution,
        attack,
        metrics,
        k=k,
        attribution_kwargs=attribution_kwargs,
        target=target,
        records_path=records_path,
        resume=resume,
        run_settings=run_settings,
        num_figures=num_figures,
        confidence=confidence,
        progress=progress,
        description=description,
        on_batch=on_batch,
        certify=certify,
    )
    run_settings = dict(run_settings or {})
    options = {}
    if certify is not None:
        options["certified"] = dict(certify)
        if "certified" not in metrics:
            metrics = [*metrics, "certified"]
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    attribution_kwargs = dict(attribution_kwargs or {})
    rank, world = rank_and_world()
    original_loader = loader
    if world > 1:
        loader, batch_indices = shard_loader(loader, rank, world)
        shard = {i for batch in batch_indices for i in batch}
    else:
        batch_indices, shard = None, None
    total = len(loader) if hasattr(loader, "__len__") else None
    # The first batch is read ahead: its first sample identifies the data.
    batches = iter(loader)
    first = next(batches, None)
    checked_first = None if first is None else checked_batch(first, 0, device)
    settings = _settings(
        model,
        attribution,
        attack,
        metrics,
        k,
        attribution_kwargs,
        target,
        _data_settings(original_loader, checked_first, world),
        run_settings,
        options,
    )
    log = _open_records(records_path, resume, rank, world, shard, settings)
    figure_batch: dict[str, list[Tensor]] = {}
    # Only the first rank draws figures: one figure per evaluation.
    figures = num_figures if figures_dir is not None and rank == 0 else 0

    def run(checked: tuple[Tensor, Tensor, Tensor | None], indices: list[int]):
        images, labels, masks = checked
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
            target,
            indices,
            figure_batch,
            figures,
            options,
        )

    first_batch = None
    seen: set[int] = set()
    with eval_mode(model):
        stream = itertools.chain([first], batches) if first is not None else ()
        bar = tqdm(
            stream, total=total, desc=description, disable=not progress or rank != 0
        )
        start = 0
        for number, batch in enumerate(bar):
            checked = checked_first if number == 0 else None
            if checked is None:
                checked = checked_batch(batch, number, device)
            labels = checked[1]
            if batch_indices is None:
                indices = list(range(start, start + int(labels.shape[0])))
                start += len(indices)
            else:
                indices = batch_indices[number]
            seen.update(indices)
            _check_resumed_labels(log, indices, labels)
            if first_batch is None:
                first_batch = (checked, indices)
            if all(i in log.records for i in indices):
                continue
            new = [r for r in run(checked, indices) if r["index"] not in log.records]
            log.write(new)
            if on_batch is not None and new:
                on_batch(new)
        if figures and not figure_batch and first_batch is not None:
            # Every batch was resumed from disk: recompute one for the figure.
            run(*first_batch)

    if set(log.records) - seen:
        # A shorter loader than the records': keep only the samples it holds,
        # so that the returned records, the file and the summary agree.
        log.rewrite([log.records[i] for i in sorted(seen & set(log.records))])
    records = _merge_ranks(log.sorted_records(), records_path, world)
    summary = summarize(records, metrics, confidence=confidence)
    figure_paths = []
    if figures_dir is not None and figure_batch:
        figure_paths.append(_write_figure(figure_batch, Path(figures_dir)))
    return EvaluationResult(records=records, summary=summary, figure_paths=figure_paths)


def _data_settings(
    loader: Any,
    first: tuple[Tensor, Tensor, Tensor | None] | None,
    world: int,
) -> dict[str, Any]:
    """Type of the data and a hash of the first sample in reading order.

    The number of samples is left out on purpose: a run resumed over more or
    fewer samples of the same data is allowed.
    """
    data = getattr(loader, "dataset", loader)
    digest = None
    if first is not None:
        images, labels, _ = first
        digest = sample_digest(images[0], int(labels[0]))
    # Rank 0 holds the first sample of the whole order (its shard starts there).
    digest = broadcast_object(digest, world)
    kind = type(data)
    return {"type": f"{kind.__module__}.{kind.__qualname__}", "first_sample": digest}


def _settings(
    model: nn.Module,
    attribution: Any,
    attack: Any,
    metrics: Sequence[str],
    k: int,
    attribution_kwargs: dict[str, Any],
    target: str,
    data: dict[str, Any],
    run_settings: dict[str, Any],
    options: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Everything that determines the records, as comparable JSON."""
    kind = type(model)
    cache: dict[int, str] = {}
    # Only a run with options records them, so settings written before there
    # were any still match.
    extra = {"options": describe(options, model, cache)} if options else {}
    return {
        "model": {
            "class": f"{kind.__module__}.{kind.__qualname__}",
            "weights": module_digest(model, cache),
        },
        "attribution": describe(attribution, model, cache),
        "attribution_kwargs": describe(attribution_kwargs, model, cache),
        "attack": describe(attack, model, cache),
        # Their order changes no record.
        "metrics": sorted(set(metrics)),
        "k": k,
        "target": target,
        "data": data,
        "run_settings": run_settings,
        **extra,
    }


def _open_records(
    records_path: str | Path | None,
    resume: bool,
    rank: int,
    world: int,
    shard: set[int] | None,
    settings: dict[str, Any],
) -> RecordLog:
    """This rank's record file, holding what earlier runs left for its shard.

    Resuming reads the merged file and every rank's file, so a run can go on
    with another number of processes (or in one) without losing or repeating
    a record; their settings must be this run's. A fresh run removes the files
    of earlier runs that it would not overwrite, so that a later resume cannot
    pick up their records.
    """
    if records_path is None:
        return RecordLog(None)
    own = rank_path(records_path, rank, world)
    merged = Path(records_path)
    siblings = rank_files(merged)
    previous: dict[int, Record] = {}
    if resume:
        for path in (merged, *siblings.values()):
            previous.update(read_records(path))
        if previous:
            # Every rank reads the same files, so all ranks raise together.
            check_same_settings(read_settings(merged), settings, merged)
        if shard is not None:
            previous = {i: r for i, r in previous.items() if i in shard}
    # Every rank has read the files before any of them changes.
    synchronize(world)
    if rank == 0:
        if not resume:
            stale = [path for r, path in siblings.items() if world == 1 or r >= world]
            if world > 1:
                stale.append(merged)
            for path in stale:
                path.unlink(missing_ok=True)
        # Written before any record, so no record exists without its settings.
        write_settings(merged, settings)
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
    target: str,
    indices: list[int],
    figure_batch: dict[str, list[Tensor]],
    num_figures: int,
    options: dict[str, dict[str, Any]],
) -> list[Record]:
    with torch.no_grad():
        logits = model(images)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise TypeError(
            "`model` must return (B, num_classes) logits, got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)}."
        )
    check_class_range(labels, logits.shape[1], name="labels")
    prediction = logits.argmax(dim=1)
    correct = prediction == labels
    classes = labels if target == "label" else prediction
    perturbed = _run_attack(attack, images, classes)
    with torch.no_grad():
        prediction_after = model(perturbed).argmax(dim=1)
    before = _attribute(attribution, images, classes, **attribution_kwargs)
    after = _attribute(attribution, perturbed, classes, **attribution_kwargs)
    batch = ScoreInputs(
        before,
        after,
        masks,
        k,
        inputs=images,
        targets=classes,
        attribution=attribution,
        attribution_kwargs=attribution_kwargs,
        options=options,
    )
    scores = score_batch(metrics, batch)
    linf = (perturbed - images).flatten(1).abs().amax(dim=1)

    columns = {
        "label": labels,
        "prediction": prediction,
        "correct": correct,
        "attacked": correct if target == "label" else torch.ones_like(correct),
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
    rows = [i for i, r in enumerate(records) if r["attacked"]][: num_figures - have]
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
    from captum_robust.visualization import plot_attack_examples
    from captum_robust.visualization import save_figure

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
