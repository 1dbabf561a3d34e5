"""`vitkit convert MODEL -o OUT`: between vitkit, Google .npz, timm, torchvision and Hugging Face files, the format
read from OUT's suffix (a path without one is an HF folder), `--to` choosing where the suffix allows several."""

from __future__ import annotations

from . import _args

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a checkpoint between formats",
        description="Read any supported checkpoint (the format is detected) and write it in the format OUTPUT's "
        "suffix (-o) names: .safetensors vitkit (or --to timm / torchvision), .npz google, .pth/.pt/.bin timm or "
        "torchvision (--to required), no suffix a Hugging Face folder. An existing file is replaced only with "
        "--force; a Hugging Face folder is written only into a new or empty folder (or, with --force, over an HF "
        "model folder); missing parent folders are not created. Files are written whole or not at all.")
    _args.add_model(p)
    _args.add_output(p, "the file to write, or a folder path without a suffix for a Hugging Face folder")
    p.add_argument("output_positional", nargs="?", metavar="OUTPUT", help="the same as -o (the older spelling)")
    p.add_argument("--to", dest="format", choices=("vitkit", "google", "timm", "hf", "torchvision"),
                   help="output format where OUTPUT's suffix allows several (a contradicting one is refused)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    _args.add_checkpoint_hints(p)
    _args.add_json(p, "print what was written as JSON on stdout")
    _args.add_runtime(p, device=False, threads=False, progress=False)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings
    from pathlib import Path

    from .. import load, save
    from ..checkpoints import records_config
    from ..errors import CheckpointError, GuessWarning, UsageError
    from ..hub.resolve import load_source
    from ._outputs import check_file_target, check_folder_target, check_source, convert_format, \
        write_folder_atomically

    if args.output and args.output_positional:
        raise UsageError(f"the output is given twice ({args.output_positional} and -o {args.output}); give it once, "
                         "with -o")
    if not (args.output or args.output_positional):
        raise UsageError("-o/--output is required: the file to write (its suffix names the format) or a folder path "
                         "without a suffix for a Hugging Face folder")
    output = Path(args.output or args.output_positional)
    check_source(args.model)
    fmt = convert_format(output, args.format)
    check_target = check_folder_target if fmt == "hf" else check_file_target
    check_target(output, args.force)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source, hints = load_source(args.model, _args.checkpoint_hints(args))
        model = load(source, **hints)
    for warning in caught:
        if issubclass(warning.category, GuessWarning) and warning.message.guessed and records_config(fmt, output):
            guess = warning.message
            raise UsageError(f"{guess.what}; the converted file would record these as facts, so say them (correcting "
                             f"what is wrong): {_args.hint_flags(guess.guessed)}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    check_target(output, args.force)  # again: loading (a download, say) takes time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if fmt == "hf":
                write_folder_atomically(output, lambda folder: save(model, folder, format="hf"))
            else:
                save(model, output, format=fmt)
        except (UsageError, CheckpointError, OSError):
            raise
        except ValueError as e:  # a model the format cannot express: say which file was refused
            raise UsageError(f"{output}: {e}") from None
    for warning in caught:  # one line each, like the loader's guesses (save warns of numerics the format changes)
        print(f"vitkit: warning: {str(warning.message).strip().splitlines()[0]}", file=sys.stderr)
    c = model.config
    if args.json:
        import json

        print(json.dumps({"model": str(args.model), "output": str(output), "format": fmt, "depth": c.depth,
                          "width": c.width, "num_heads": c.num_heads, "num_classes": c.num_classes,
                          "image_size": list(c.image_size)}, indent=2))
    _args.status(args)(f"wrote {output} ({fmt}): {c.depth} blocks, width {c.width}, {c.num_heads} heads, "
                       f"{c.num_classes} classes, image size {tuple(c.image_size)}")
    return 0
