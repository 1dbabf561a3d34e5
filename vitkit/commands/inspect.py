"""`vitkit inspect attention|distance|posemb|filters MODEL ...`: the paper's Figures 6 and 7 as PNGs.

Each subcommand calls a function of `vitkit.inspect` that returns the numbers, draws them with
`vitkit.inspect.plots`, prints where the PNG went, and with --arrays also writes the numbers as .npz.
"""

from __future__ import annotations

from pathlib import Path

from . import _args

ORDER = 60


def register(sub) -> None:
    p = sub.add_parser("inspect", help="attention rollout, attention distance, position embeddings, filters",
                       description="Draw what a trained model has learned (the paper's Section 4.5): attention "
                       "rollout (Figure 6), mean attention distance, position-embedding similarity and the principal "
                       "components of the patch-embedding filters (Figure 7).")
    kinds = p.add_subparsers(dest="what", metavar="WHAT")
    kinds.required = True

    def common(q, default_out):
        _args.add_model(q)
        _args.add_output(q, f"the PNG to write (default {default_out}; replaced if it exists, its folder must exist)",
                         "--out", default=default_out)
        q.add_argument("--arrays", metavar="NPZ", help="also write the numbers drawn to this .npz file")
        _args.add_json(q, "print what was drawn as JSON on stdout: the files written and the numbers' summary")
        _args.add_checkpoint_hints(q)
        q.set_defaults(func=run)

    def runtime(q, device=True):
        _args.add_runtime(q, device=device, progress=False)

    q = kinds.add_parser("attention", help="attention rollout over the images, and the class token's attention "
                         "per layer and head", description="Attention rollout (Abnar and Zuidema, 2020) from the "
                         "class token to the patches, drawn over each image as the paper's Figure 6; and, in "
                         "<out>_heads.png, the class token's attention per layer and head for the first image.")
    common(q, "attention.png")
    q.add_argument("images", nargs="+", help="image files, or folders (every image file inside); unreadable files "
                   "are skipped with a warning")
    q.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="how to combine the heads of a layer before rolling out (default mean, as the paper)")
    q.add_argument("--batch-size", type=_args.positive_int, default=16, help="images per forward pass (default 16)")
    _args.add_max_bad(q, 1.0)
    runtime(q)

    q = kinds.add_parser("distance", help="mean attention distance of every head at every depth",
                         description="Mean attention distance in pixels (Figure 7 right, Appendix D.7): distance "
                         "between query and key patch centres weighted by the attention, averaged over the query "
                         "patches and a sample of images; the class token is left out as query and key.")
    common(q, "distance.png")
    q.add_argument("--data", required=True, help="folder of images (an ImageFolder tree or flat); unreadable files "
                   "are skipped with a warning")
    q.add_argument("--num-images", type=_args.positive_int, default=128,
                   help="random sample of this many images (default 128)")
    q.add_argument("--seed", type=_args.count, default=0, help="seed of the sample (default 0)")
    q.add_argument("--batch-size", type=_args.positive_int, default=32, help="images per forward pass (default 32)")
    _args.add_max_bad(q, 1.0)
    runtime(q)

    q = kinds.add_parser("posemb", help="cosine similarity of the position embeddings",
                         description="For every patch position, the cosine similarity of its position embedding to "
                         "all others, as a grid of small heat maps (Figure 7 centre).")
    common(q, "posemb.png")
    runtime(q, device=False)

    q = kinds.add_parser("filters", help="principal components of the patch-embedding filters",
                         description="The first principal components of the patch-embedding filters as RGB tiles "
                         "(Figure 7 left). Not for hybrid models, whose embedding sees ResNet features.")
    common(q, "filters.png")
    q.add_argument("--components", type=_args.positive_int, default=28,
                   help="how many components (default 28, as the paper)")
    q.add_argument("--columns", type=_args.positive_int, default=7, help="tiles per row (default 7)")
    runtime(q, device=False)


def _load(args):
    from .. import load
    from ..hub.resolve import load_source
    from ._outputs import check_output_file

    for path in (args.output, args.arrays):  # before the model is loaded: a bad path costs nothing
        if path:
            check_output_file(Path(path))
    source, hints = load_source(args.model, _args.checkpoint_hints(args))
    model = load(source, **hints)
    device = getattr(args, "device", "cpu")
    from ..training.distributed import pick_device

    model.to(pick_device(device))
    return model.eval()


def _warn(message: str) -> None:
    import sys

    print(f"vitkit: warning: {message}", file=sys.stderr)


def _read(files, max_bad_fraction: float) -> tuple[list[str], list]:
    """(paths, RGB images) of the readable files; the others skipped with one warning, an error if none is left."""
    from ..data import read_images

    good, _ = read_images(files, log=_warn, max_bad_fraction=max_bad_fraction)
    return [path for path, _ in good], [image for _, image in good]


def _finish(args, report: dict, lines: list[str], **arrays) -> int:
    """Write the --arrays file, then print: the lines (status, unless --quiet), or the report as JSON."""
    import json

    if args.arrays:
        import numpy as np

        from ..files import atomic_path

        with atomic_path(args.arrays) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        report["arrays"] = str(args.arrays)
        lines.append(f"wrote {args.arrays}")
    if args.json:
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print("\n".join(lines))
    return 0


def run(args) -> int:
    return {"attention": _attention, "distance": _distance, "posemb": _posemb, "filters": _filters}[args.what](args)


def _attention(args) -> int:
    import numpy as np

    from ..data import gather_image_files
    from ..inspect import attention_rollout, class_token_attention
    from ..inspect.images import prepare_images
    from ..inspect.plots import plot_attention_rollout, plot_class_token_attention

    out = Path(args.output)
    heads_out = out.with_name(f"{out.stem}_heads{out.suffix or '.png'}")
    files = gather_image_files(args.images, log=_warn)  # before the model: a wrong path costs nothing
    model = _load(args)
    device = next(model.parameters()).device
    paths, images = _read(files, args.max_bad_fraction)
    maps, pixels = [], []
    for start in range(0, len(images), args.batch_size):
        batch, batch_pixels = prepare_images(images[start:start + args.batch_size], model)
        maps.append(attention_rollout(model, batch.to(device), head_fusion=args.head_fusion))
        pixels.append(batch_pixels)
        if start == 0:
            heads = class_token_attention(model, batch[:1].to(device))[0]  # (layers, heads, gh, gw)
    maps, pixels = np.concatenate(maps), np.concatenate(pixels)
    titles = ["/".join(Path(p).parts[-2:]) for p in paths]  # class folder and file name
    plot_attention_rollout(pixels, maps, out, titles=titles)
    query = "class token" if model.config.class_token else "mean patch token (no class token)"
    plot_class_token_attention(pixels[0], heads, heads_out, title=f"{query} attention to the patches")
    lines = [f"wrote {out} (attention rollout of {len(maps)} image(s), {maps.shape[1]}x{maps.shape[2]} patches, "
             f"heads fused by {args.head_fusion})",
             f"wrote {heads_out} ({query} attention, {heads.shape[0]} layers x {heads.shape[1]} heads, {titles[0]})"]
    report = {"model": str(args.model), "images": paths, "rollout_png": str(out), "heads_png": str(heads_out),
              "grid": [int(maps.shape[1]), int(maps.shape[2])], "head_fusion": args.head_fusion,
              "layers": int(heads.shape[0]), "heads": int(heads.shape[1])}
    return _finish(args, report, lines, rollout=maps, class_token_attention=heads)


def _distance(args) -> int:
    from ..inspect import find_images, mean_attention_distance, patch_distances
    from ..inspect.attention import effective_patch_size
    from ..inspect.images import prepare_images
    from ..inspect.plots import plot_attention_distance

    files = find_images(args.data, limit=args.num_images, seed=args.seed, log=_warn)
    model = _load(args)
    device = next(model.parameters()).device
    files, images = _read(files, args.max_bad_fraction)
    batches = (prepare_images(images[start:start + args.batch_size], model)[0].to(device)
               for start in range(0, len(images), args.batch_size))
    distances = mean_attention_distance(model, batches)  # (layers, heads)
    patch = effective_patch_size(model)
    uniform = float(patch_distances(model.grid_size, patch).mean())  # what attention spread evenly would give
    plot_attention_distance(distances, args.output, image_size=model.preprocessing.image_size, uniform=uniform)
    lines = [f"mean attention distance in pixels over {len(files)} images ({tuple(model.preprocessing.image_size)} px "
             f"input, {patch[0]}x{patch[1]} px patches):", f"{'layer':>5} {'min':>7} {'mean':>7} {'max':>7}"]
    lines += [f"{layer:>5} {row.min():>7.1f} {row.mean():>7.1f} {row.max():>7.1f}"
              for layer, row in enumerate(distances)]
    lines += [f"(uniform attention would give {uniform:.1f} px)", f"wrote {args.output}"]
    report = {"model": str(args.model), "images": len(files), "png": str(args.output), "uniform_px": uniform,
              "mean_attention_distance_px": distances.tolist()}
    return _finish(args, report, lines, mean_attention_distance=distances)


def _posemb(args) -> int:
    from ..inspect import position_embedding_similarity
    from ..inspect.plots import plot_position_similarity

    model = _load(args)
    similarity = position_embedding_similarity(model)
    plot_position_similarity(similarity, args.output)
    gh, gw = similarity.shape[:2]
    lines = [f"wrote {args.output} (position embedding similarity, {gh}x{gw} patches, {model.config.posemb})"]
    report = {"model": str(args.model), "png": str(args.output), "grid": [int(gh), int(gw)],
              "posemb": model.config.posemb}
    return _finish(args, report, lines, position_embedding_similarity=similarity)


def _filters(args) -> int:
    from ..inspect import filter_components
    from ..inspect.plots import plot_filters

    model = _load(args)
    components, explained = filter_components(model, args.components)
    plot_filters(components, args.output, columns=args.columns, explained=explained)
    lines = [f"wrote {args.output} (first {len(components)} principal components of the patch-embedding filters, "
             f"{100 * explained.sum():.1f}% of their variance)"]
    report = {"model": str(args.model), "png": str(args.output), "components": len(components),
              "explained_variance_ratio": [float(x) for x in explained]}
    return _finish(args, report, lines, components=components, explained_variance_ratio=explained)
