"""The Python API for training and using a model: `vitkit.train`, `vitkit.finetune`, `vitkit.evaluate`,
`vitkit.predict`. The command line (`vitkit train`, `finetune`, ...) calls these, so every rule (which recipe, where
each value comes from, what a resumed or fine-tuned run may change) lives here once.

    import vitkit
    result = vitkit.train()                                     # the main job: digits, about a minute on 2 cores
    result = vitkit.train("cifar10", data="/data/cifar10", steps=2000)
    result = vitkit.finetune("runs/NAME", "/data/flowers", image_size=224, steps=500)
    metrics = vitkit.evaluate("runs/NAME")                      # {"top1": ..., "top5": ..., "per_class": ...}
    vitkit.predict("runs/NAME", ["cat.jpg", "dog.jpg"], top_k=3)   # [[("cat", 0.91), ...], ...]

Recipe resolution: a value comes from, in rising order, TrainConfig's defaults; the fine-tuning recipe (finetune
only, beneath a recipe file of the user's); the recipe (`recipe=` / `--recipe`), or without one the main job on the
built-in digits, or `recipes/default.toml` for data of the user's; then the settings (keywords / flags). The
effective configuration and the source of each value are printed at start and saved as RUN/provenance.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .configs import CHECKPOINT_HINTS
from .errors import UsageError

MAIN_JOB = "digits"  # vitkit train with neither --recipe nor --data
DEFAULT_RECIPE = "default"  # vitkit train --data DIR without --recipe: a general recipe for a folder of images
FINETUNE_RECIPE = "finetune"  # beneath the user's recipe in vitkit finetune


@dataclass
class Resolved:
    """A training configuration and where each of its values came from."""
    config: Any  # TrainConfig
    sources: dict[str, str] = field(default_factory=dict)  # field -> "default", "recipe NAME", "setting", ...
    resume: bool | str = False
    recipe: str | None = None  # the recipe's name or file, None when resuming

    def describe(self) -> str:
        """The effective values that are not TrainConfig's defaults, each with its source, one per line."""
        values = self.config.to_dict()
        lines = [f"  {key} = {json.dumps(values[key])}  ({source})" for key, source in self.sources.items()
                 if source != "default"]
        head = (f"configuration (recipe {self.recipe}; values not listed are TrainConfig's defaults):"
                if self.recipe else "configuration (values not listed are TrainConfig's defaults):")
        return "\n".join([head, *lines])

    def to_json(self) -> str:
        values = self.config.to_dict()
        return json.dumps({"recipe": self.recipe, "values": {k: {"value": values[k], "source": s}
                                                             for k, s in self.sources.items()}}, indent=1) + "\n"


def _recipe_values(name_or_path: str) -> tuple[dict[str, Any], str]:
    from .training.config import find_recipe, read_recipe_file

    path = find_recipe(name_or_path)
    return read_recipe_file(path), (path.stem if path.parent.resolve() == _recipes_dir() else str(path))


def _recipes_dir() -> Path:
    from .training.config import RECIPES_DIR

    return RECIPES_DIR.resolve()


def resolve_training(recipe: str | os.PathLike | None = None, settings: dict[str, Any] | None = None, *,
                     finetune: bool = False, resume: bool | str | os.PathLike = False, smoke: bool = False,
                     log: Callable[[str], None] | None = print) -> Resolved:
    """The configuration of a training run, every value with its source; `log` receives the announcements (which
    recipe was chosen when none was named). One-line UsageErrors for what cannot be honoured."""
    from .training.config import ARCHITECTURE_FIELDS, FIELDS, MODEL_FIELDS, TrainConfig, apply_overrides
    from .training.config import smoke as shrink
    from .training.trainer import load_run_config

    settings = {k.replace("-", "_"): v for k, v in (settings or {}).items() if v is not None}
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise UsageError(f"unknown training setting(s) {', '.join(unknown)}; see TrainConfig or vitkit train --help")
    say = log or (lambda message: None)
    sources = {name: "default" for name in FIELDS}
    if resume:
        from .training import run_folder

        if recipe is not None:
            raise UsageError("--resume continues a run with its own config; drop --recipe")
        if resume is True:
            if "name" not in settings:
                raise UsageError("--resume without a folder needs --name (or pass the run folder: --resume runs/NAME)")
            resume = str(Path(settings.get("out_dir", "runs")) / settings["name"])
        run_dir, _ = run_folder.resolve_resume(resume)
        elsewhere = {k: settings.pop(k) for k in ("name", "out_dir") if k in settings}
        if elsewhere and Path(elsewhere.get("out_dir", run_dir.parent)) / elsewhere.get("name", run_dir.name) \
                != run_dir:
            raise UsageError(f"--resume continues {run_dir}; "
                             f"{', '.join(f'{_flag(k)} {v}' for k, v in elsewhere.items())} "
                             "names another run folder: drop it (a run keeps its folder)")
        base = load_run_config(run_dir)
        previous = run_dir / run_folder.PROVENANCE
        if previous.is_file():
            stored = json.loads(previous.read_text(encoding="utf-8")).get("values", {})
            sources.update({k: v["source"] for k, v in stored.items() if k in sources})
        sources.update({k: f"the run's {run_folder.CONFIG}" for k in FIELDS if sources[k] == "default"})
        config = apply_overrides(base, settings)
        changed = [k for k in MODEL_FIELDS if getattr(config, k) != getattr(base, k)]
        if changed:
            raise UsageError(f"--resume continues {run_dir}'s model, which its checkpoint fixes; "
                             f"{', '.join(f'{_flag(k)} {getattr(config, k)}' for k in changed)} "
                             f"would change it: drop it, or start a new run from this one with --init-from {run_dir}")
        sources.update({k: "setting" for k in settings})
        return Resolved(_check_unused_settings(config.validate(), sources, say), sources, str(resume), None)

    layers: list[tuple[dict[str, Any], str]] = []
    if finetune:
        values, name = _recipe_values(FINETUNE_RECIPE)
        layers.append((values, f"recipe {name}"))
    if recipe is not None:
        values, name = _recipe_values(str(recipe))
        if "data" not in values and "data" not in settings:
            raise UsageError(f"recipe {name} declares no data; pass --data DIR (data=DIR in Python)")
        chosen = name
    elif finetune:
        values, chosen = {}, FINETUNE_RECIPE
    elif settings.get("data", MAIN_JOB) == MAIN_JOB:
        values, chosen = _recipe_values(MAIN_JOB)
        say(f"no recipe given: the main job, recipe {chosen} (a small ViT on the built-in digits)")
    else:
        values, chosen = _recipe_values(DEFAULT_RECIPE)
        say(f"no recipe given: recipe {chosen}, the general recipe for a folder of images (recipes/"
            f"{DEFAULT_RECIPE}.toml; name another with --recipe)")
    if recipe is not None or not finetune:
        layers.append((values, f"recipe {chosen}"))
    config = TrainConfig()
    for values, source in layers:
        config = apply_overrides(config, values)
        sources.update({k: source for k in values})
    config = apply_overrides(config, {"recipe": chosen, **settings})
    sources["recipe"] = "chosen recipe"
    sources.update({k: "setting" for k in settings})
    if "model" in settings and not config.init_from:
        # a variant named in the settings brings its own shape (and its own resolution unless image_size is set)
        cleared = [k for k in (*ARCHITECTURE_FIELDS, "image_size") if k not in settings]
        dropped = [f"{k}={getattr(config, k)!r}" for k in cleared
                   if getattr(config, k) is not None and sources[k].startswith("recipe")]
        if dropped:
            say(f"note: model {settings['model']} brings its own shape; the recipe's {', '.join(dropped)} "
                f"{'is' if len(dropped) == 1 else 'are'} not used (set again what should stay)")
        config = config.replace(**{k: None for k in cleared})
        sources.update({k: f"the variant {settings['model']}" for k in cleared})
    if config.init_from:
        # the architecture comes from the checkpoint; so does the resolution, except when fine-tuning
        cleared = [k for k in ARCHITECTURE_FIELDS if k not in settings]
        if not (config.reset_head or finetune) and "image_size" not in settings:
            cleared.append("image_size")
        config = config.replace(**{k: None for k in cleared})
        sources.update({k: f"the checkpoint {config.init_from}" for k in cleared})
    if finetune:
        config = config.replace(reset_head=True)
        sources["reset_head"] = "fine-tuning"
        if not config.init_from:
            raise UsageError("vitkit finetune needs --from NAME|CHECKPOINT (also spelt --init-from)")
    if smoke:
        before = config.to_dict()
        shrunk = shrink(config)
        # what the user set explicitly wins over the shrink (--smoke --batch-size 4 trains at 4)
        config = shrunk.replace(**{k: before[k] for k in settings if k in before and before[k] != getattr(shrunk, k)})
        sources.update({k: "smoke" for k, v in config.to_dict().items() if before[k] != v})
    config = _check_unused_settings(config.validate(), sources, say)  # (settings a pipeline cannot honour: refused)
    return Resolved(config, sources, False, chosen)


def _flag(name: str) -> str:
    """A TrainConfig field's command-line flag."""
    return "--" + name.replace("_", "-")


def _check_unused_settings(config, sources: dict[str, str], say: Callable[[str], None]):
    """beta1, beta2 or momentum that the chosen optimizer does not read, and settings that act only beside another
    which is off (`idle_settings`): refused when set here, announced when a recipe (or the run being resumed)
    brought them. An unset momentum that the optimizer reads gets its default here,
    so that the run's config shows the number."""
    from .training.config import idle_settings
    from .training.optim import DEFAULT_MOMENTUM, OPTIMIZER_READS

    reads = OPTIMIZER_READS[config.optimizer]
    unread = [k for k in ("beta1", "beta2", "momentum") if k not in reads and sources.get(k, "default") != "default"
              and getattr(config, k) is not None]
    told = [k for k in unread if sources[k] == "setting"]
    if told:
        raise UsageError(f"{', '.join(f'{k}={getattr(config, k)}' for k in told)}: optimizer {config.optimizer} "
                         f"does not use {'it' if len(told) == 1 else 'them'} (it reads {', '.join(reads)}); drop "
                         f"{'it' if len(told) == 1 else 'them'} or choose another optimizer")
    for k in unread:
        say(f"note: {k} = {getattr(config, k)} ({sources[k]}) is not used by optimizer {config.optimizer}")
    idle = idle_settings(config)  # settings that act only beside another, which is off here
    told = [k for k in idle if sources.get(k) == "setting"]
    if told:
        k = told[0]
        raise UsageError(f"{k}={getattr(config, k)!r} ({_flag(k)}) has no effect without {idle[k]}")
    for k, needs in idle.items():
        say(f"note: {k} = {getattr(config, k)} ({sources.get(k)}) has no effect without {needs}")
    if config.momentum is None and config.optimizer in DEFAULT_MOMENTUM:  # shown in the config, not applied unseen
        config = config.replace(momentum=DEFAULT_MOMENTUM[config.optimizer])
        sources["momentum"] = f"default for {config.optimizer}"
    return config


# ------------------------------------------------------------------------------------------------ train
def train(recipe: str | os.PathLike | None = None, *, resume: bool | str | os.PathLike = False, smoke: bool = False,
          log: Callable[[str], None] | None = None, **settings):
    """Train a ViT and return a `TrainResult` (`.run_dir`, `.final.top1`, `.model`, ...).

    recipe: a name in recipes/ or a .toml/.json file; None: the main job (digits) when `data` is not given, else
    recipes/default.toml. settings: any TrainConfig field (`data=`, `steps=`, `lr=`, `name=`, ...), over the recipe.
    resume: continue a run (its folder, or True with `name=`); settings then override its config. `log` receives
    every status line (default: printed). Ctrl-C saves a checkpoint and raises `TrainingInterrupted`.
    """
    from .training.trainer import train as run_training

    notes: list[str] = []  # printed with the configuration once the run folder is ours (a refusal is one line)
    resolved = resolve_training(recipe, settings, resume=resume, smoke=smoke, log=notes.append)
    return run_training(resolved.config, resume=resolved.resume, log=log, provenance=resolved.to_json(),
                        announce="\n".join([*notes, resolved.describe()]))


def finetune(model_or_name: str | os.PathLike, data: str | os.PathLike, *, recipe: str | os.PathLike | None = None,
             smoke: bool = False, log: Callable[[str], None] | None = None, **settings):
    """Fine-tune a checkpoint (a run folder, a file vitkit reads, or a pre-trained name from
    `vitkit.list_pretrained()`) on `data`, the paper's way: a new zero-initialised head for the data's classes, the
    position embeddings resampled to `image_size`, the fine-tuning recipe (recipes/finetune.toml) beneath
    `recipe`'s values and the settings. Returns a `TrainResult`."""
    from .training.trainer import train as run_training

    notes: list[str] = []
    resolved = resolve_training(recipe, {**settings, "init_from": str(model_or_name), "data": str(data)},
                                finetune=True, smoke=smoke, log=notes.append)
    return run_training(resolved.config, log=log, provenance=resolved.to_json(),
                        announce="\n".join([*notes, resolved.describe()]))


# ------------------------------------------------------------------------------------------- use a model
def _model(model_or_path, hints: dict):
    """The model to use, and where it came from; `hints` (`load`'s keywords, CHECKPOINT_HINTS) are for checkpoint files."""
    from .checkpoints import load
    from .hub.resolve import load_source

    unknown = sorted(set(hints) - set(CHECKPOINT_HINTS))
    if unknown:
        raise TypeError(f"unexpected argument(s) {', '.join(unknown)}; the checkpoint's are {', '.join(CHECKPOINT_HINTS)}")
    hints = {k: v for k, v in hints.items() if v is not None}
    if isinstance(model_or_path, (str, os.PathLike)):
        source, hints = load_source(str(model_or_path), hints)
        return load(source, **hints), str(model_or_path)
    if hints:
        raise UsageError(f"{', '.join(hints)} say what a checkpoint file leaves open; the model given is built")
    if hasattr(model_or_path, "model") and hasattr(model_or_path, "run_dir"):  # a TrainResult
        return model_or_path.model, str(model_or_path.run_dir)
    return model_or_path, None


def evaluate(model_or_path, data: str | os.PathLike | None = None, *, num_heads: int | None = None,
             pool: str | None = None, **options) -> dict[str, Any]:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a model on a data set, as a dict: the
    record `vitkit eval --json` prints and results.json holds.

    model_or_path: a VisionTransformer, a TrainResult, a run folder, a checkpoint file, or a pre-trained name
    (num_heads=, pool=, image_size=, gelu=, layer_norm_eps=, ema= for files that do not record them). For a run, `data` defaults to the run's, and split "auto"
    is the run's own evaluation split exactly as it was held out (holdout.json); "all" is every image, "holdout" a
    fresh hold-out of other data (val_fraction=, val_per_class=, split_seed=). Other options, as `vitkit eval`'s
    flags: limit_per_class, max_bad_fraction (0.01), few_shot=[1, 5, ...] with few_shot_draws (5) for the paper's
    few-shot linear evaluation and a linear probe, batch_size (64), num_workers (0), precision ("fp32", "bf16",
    "fp16", or "int8": the dense layers quantized, CPU only), flip (True averages each image's probabilities
    with its mirror image's; default: as the run evaluated, its eval_flip, else False), device ("auto"), progress
    (False); output: None writes nothing, "auto" `vitkit eval`'s folder (RUN/eval-<split>, else eval-<model name>), or a folder, for results.json
    and confusion.png; log: a function receiving the status lines (default: none).
    """
    return evaluation(model_or_path, data, num_heads=num_heads, pool=pool, **options).results


def evaluation(model_or_path, data: str | os.PathLike | None = None, *, num_heads: int | None = None,
               pool: str | None = None, **options):
    """`vitkit.evaluate` as an `Evaluation`: `.results` (the dict), `.few_shot` (the few-shot results as objects)
    and `.folder` (where the files went), for a printed report (`vitkit eval`)."""
    from .eval.report import evaluate_model

    hints = {name: options.pop(name) for name in CHECKPOINT_HINTS if name in options}
    model, where = _model(model_or_path, {"num_heads": num_heads, "pool": pool, **hints})
    return evaluate_model(model, where, data, **options)


def predict(model_or_path, images, top_k: int = 5, *, batch_size: int = 32, device: str = "auto",
            num_heads: int | None = None, pool: str | None = None, max_bad_fraction: float | None = 0.0,
            log: Callable[[str], None] | None = None, **hints) -> list[list[tuple[str, float]]]:
    """The top-k (class name, probability) of each image, best first, as one list per image.

    model_or_path: as for `evaluate`, or a file `vitkit export` wrote (.onnx, .pt2: run on the CPU). images: a path,
    a folder (each image file inside, in order), a PIL image, or a list of them. The class names and the
    preprocessing come from the model (class indices as names where it has none). An unreadable file is an error,
    unless max_bad_fraction allows a share of them (1.0: any), whose lists are then empty; `log` receives the
    warnings (default: none). num_heads=, pool= and `hints` (image_size=, gelu=, layer_norm_eps=, ema=) say what a
    checkpoint file leaves open. `predictions` returns the same as records with file names and class indices."""
    records = predictions(model_or_path, images, top_k, batch_size=batch_size, device=device, num_heads=num_heads,
                          pool=pool, max_bad_fraction=max_bad_fraction, log=log, **hints)
    return [[(p["class"], p["probability"]) for p in record.get("predictions", [])] for record in records]


def predictions(model_or_path, images, top_k: int = 5, *, batch_size: int = 32, device: str = "auto",
                num_heads: int | None = None, pool: str | None = None, max_bad_fraction: float | None = 0.0,
                log: Callable[[str], None] | None = None, **hints) -> list[dict]:
    """`vitkit.predict` as the records `vitkit predict --json` prints: {"image": path, "predictions": [{"class",
    "index", "probability"}, ...]}, or {"image": path, "error": reason} for a file skipped as unreadable ("image":
    None for a PIL image)."""
    from .eval.predict import predict_records
    from .training.distributed import pick_device

    if isinstance(model_or_path, (str, os.PathLike)) and str(model_or_path).lower().endswith((".onnx", ".pt2")):
        from .export import load_exported  # an exported file: names and preprocessing inside

        given = [name for name, value in {"num_heads": num_heads, "pool": pool, **hints}.items() if value is not None]
        if given:
            raise UsageError(f"{model_or_path}: an exported file records its model; {', '.join(given)} are for "
                             "checkpoints")
        if device not in ("auto", "cpu"):
            raise UsageError(f"{model_or_path}: exported files run on the CPU here, not --device {device}")
        model, where, device = load_exported(model_or_path), str(model_or_path), "cpu"
    else:
        model, where = _model(model_or_path, {"num_heads": num_heads, "pool": pool, **hints})
        device = pick_device(device)
        model.to(device)
    return predict_records(model, images, top_k, batch_size=batch_size, device=device,
                           max_bad_fraction=max_bad_fraction, log=log, where=where)
