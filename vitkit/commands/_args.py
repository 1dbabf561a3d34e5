"""argparse types shared by the commands: numbers checked against their range (`vitkit.options.Range`) and device
names, so that a bad value is a one-line argparse error naming the flag and what is allowed."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..options import AT_LEAST_ONE, COUNT, POSITIVE, SHARE, Range, require_device


def number(kind: type, allowed: Range):
    """An argparse type: `kind` (int or float) read from the text, then checked against `allowed`."""

    def parse(text: str):
        value = kind(text)  # a ValueError: argparse's own "invalid int value: 'x'"
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def int_range(lo: int | None = None, hi: int | None = None):
    """Whole numbers lo..hi, both ends included."""
    return number(int, Range(lo, hi, integer=True))


positive_int = number(int, AT_LEAST_ONE)    # >= 1: batch sizes, counts of things shown
count = number(int, COUNT)                  # >= 0
positive_float = number(float, POSITIVE)    # > 0
share = number(float, SHARE)                # [0, 1]
open_share = number(float, Range(0, 1, lo_open=True, hi_open=True))  # (0, 1): a hold-out share


def device_type(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps, and one this machine has."""
    try:
        return require_device(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


device = device_type  # the name the commands use

DEVICE_HELP = "auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps (default auto)"


# ------------------------------------------------------------------------------------------ the shared flags
# Every command that takes a model takes it the same way (MODEL, first), writes with -o/--output, prints machine-
# readable output on stdout with --json, and knows --device, --threads, --progress/--no-progress and --quiet where
# they apply. One spelling each, written here once.

MODEL_HELP = ("a checkpoint file (.safetensors, Google .npz, timm/torchvision .pth/.pt/.bin), a checkpoint or Hugging "
              "Face folder, a run folder (runs/NAME: its final model), a pre-trained name (vitkit models "
              "--pretrained) or a URI (hf-hub:ORG/REPO, https://..., gs://...)")
THREADS = number(int, COUNT)  # the same range as train's --threads: 0 leaves PyTorch's choice


def add_model(p, alias: str | None = None, extra: str = "") -> None:
    """MODEL, the first positional argument. `alias`: an older flag spelling (eval's --checkpoint) kept working;
    `extra`: what else this command takes as MODEL."""
    if alias is None:
        p.add_argument("model", metavar="MODEL", help=MODEL_HELP + extra)
        return
    p.add_argument("model", metavar="MODEL", nargs="?", help=MODEL_HELP + extra)
    p.add_argument(alias, dest="model_flag", metavar="MODEL", help=argparse.SUPPRESS)
    p.set_defaults(model_alias=alias)


def add_output(p, help: str, *aliases: str, default=None) -> None:
    """-o/--output: the file or folder written (older spellings in `aliases` still work)."""
    p.add_argument("-o", "--output", dest="output", metavar="PATH", default=default, help=help)
    for alias in aliases:  # working, not advertised
        p.add_argument(alias, dest="output", metavar="PATH", default=default, help=argparse.SUPPRESS)


def image_size(text: str) -> int | tuple[int, int]:
    """--image-size: S (square) or HxW, in pixels."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected S or HxW (e.g. 224 or 32x48), got {text!r}")
    sizes = tuple(positive_int(part) for part in parts)
    return sizes[0] if len(sizes) == 1 else sizes


def add_checkpoint_hints(p) -> None:
    """The flags that say what a checkpoint file does not record: one per keyword a loader may have to guess."""
    from ..configs import GELUS, POOLS

    p.add_argument("--num-heads", type=positive_int, help="attention heads, for files that do not record them "
                   "(timm and torchvision state dicts, bare HF weights)")
    p.add_argument("--pool", choices=POOLS, help="pooling, for files that do not record it")
    p.add_argument("--image-size", type=image_size, metavar="S|HxW", help="the image size the file's position "
                   "embeddings were trained at, for files that do not record it")
    p.add_argument("--gelu", choices=GELUS, help="the GELU form, for files that do not record it")
    p.add_argument("--layer-norm-eps", type=positive_float, metavar="EPS",
                   help="LayerNorm's epsilon, for files that do not record it")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None, help="a training checkpoint "
                   "with both the weights and their moving average, or a run folder trained with --ema-decay: "
                   "--ema takes the average, --no-ema the weights")


def checkpoint_hints(args) -> dict:
    """The hints given on the command line, as `vitkit.load`'s keywords."""
    from ..configs import CHECKPOINT_HINTS

    return {name: getattr(args, name) for name in CHECKPOINT_HINTS if getattr(args, name, None) is not None}


def hint_flags(values: dict) -> str:
    """`vitkit.load` keywords and values as the flags that give them: {"image_size": (40, 40)} -> --image-size 40."""
    def spelt(value):
        if isinstance(value, (tuple, list)):
            return str(value[0]) if len(set(value)) == 1 else "x".join(str(v) for v in value)
        return str(value)

    return " ".join(f"--{name.replace('_', '-')} {spelt(value)}" for name, value in values.items())


def add_json(p, help: str = "print the result as JSON on stdout (status lines go to stderr)") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_max_bad(p, default: float) -> None:
    """--max-bad-fraction: the one policy for unreadable images (skipped and counted in one warning; the command
    stops when more than this share of the files are unreadable, and always when none is left)."""
    p.add_argument("--max-bad-fraction", type=share, default=default, metavar="X",
                   help=f"stop when more than this share of the image files cannot be read (default {default:g}"
                   + ("; unreadable files are skipped, counted and named in one warning)" if default < 1 else
                      ": skip any, stop only when none is left)"))


def add_runtime(p, *, device: bool = True, threads: bool = True, progress: bool = True) -> None:
    """--device, --threads, --progress/--no-progress where they apply, and --quiet always."""
    if device:
        p.add_argument("--device", type=device_type, default="auto", help=DEVICE_HELP)
    if threads:
        p.add_argument("--threads", type=THREADS, default=0, metavar="N",
                       help="CPU threads for the model's math (default 0: PyTorch's choice, one per core)")
    if progress:
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="progress bars on stderr (default on; off with --quiet)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the result and errors/warnings: no status lines, no progress bars")


def finish(args) -> None:
    """What the shared flags do once parsed, for every command: MODEL from its old flag spelling, --quiet turning
    progress bars off, --threads applied."""
    alias = getattr(args, "model_alias", None)
    if alias is not None:
        if args.model is not None and args.model_flag is not None:
            raise UsageError(f"the model is given twice (MODEL {args.model} and {alias} {args.model_flag}); give "
                             "it once, as MODEL")
        args.model = args.model if args.model is not None else args.model_flag
        if args.model is None:
            raise UsageError("MODEL is required (a checkpoint file or folder, a run folder, a pre-trained name or a "
                             "URI)")
    if getattr(args, "quiet", False) and hasattr(args, "progress"):
        args.progress = False
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


WARNING_WORDS = ("skipped", "note:", "warning:")  # how the library's log lines that warn begin


def warn(message: str) -> None:
    """A library line that warns, on stderr: "vitkit: note: ..." or "vitkit: warning: ..."."""
    import sys

    said = message if message.startswith(("note:", "warning:")) else f"warning: {message}"
    print(f"vitkit: {said}", file=sys.stderr, flush=True)


def warnings_only(message: str) -> None:
    """--quiet's log: what warns (an unreadable file skipped, a setting not used) still reaches stderr."""
    if message.startswith(WARNING_WORDS):
        warn(message)


def status(args):
    """The function a command prints its status lines with ("wrote x.png"): stdout normally, stderr when --json
    owns stdout; with --quiet only the lines that warn, on stderr."""
    import sys

    if getattr(args, "quiet", False):
        return warnings_only
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    return lambda message: print(message, file=stream, flush=True)
