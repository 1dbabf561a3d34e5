"""`vitkit data pack SRC OUT`: an image set (digits, an ImageFolder tree, a CIFAR folder) as WebDataset tar shards
for streaming (`vitkit train --data 'OUT/shard-{000000..000009}.tar'`)."""

from __future__ import annotations

ORDER = 35


def register(sub) -> None:
    import argparse

    from . import _args
    from ._args import count, open_share, positive_int, share

    p = sub.add_parser("data", help="prepare training data (pack an image set as tar shards)",
                       description="Prepare training data.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    pack = actions.add_parser(
        "pack", help="write an image set as WebDataset tar shards with an index",
        description="Write the training split of SRC as OUT/shard-NNNNNN.tar and its evaluation split as "
        "OUT/val-NNNNNN.tar (samples <key>.jpg or .png and <key>.cls), with OUT/index.json naming the classes and "
        "counting each shard's samples and bytes. The samples are shuffled once (--seed) so that every shard holds "
        "every class. OUT is written in a temporary folder and appears whole or not at all.",
        epilog="examples:\n  vitkit data pack digits out/digits-shards --shard-size 500\n"
        "  vitkit data pack ~/data/cifar10 out/cifar10-shards --shard-size 5000\n"
        "  vitkit train --data 'out/cifar10-shards/shard-{000000..000008}.tar'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pack.add_argument("src", metavar="SRC", help="'digits', an ImageFolder tree (with or without train/ and val/) or "
                      "a CIFAR-10/100 python folder")
    pack.add_argument("out", metavar="OUT", nargs="?", help="the same as -o (the older spelling)")
    _args.add_output(pack, "the folder to create (it must not exist; its parent must)")
    pack.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard (default 1000)")
    pack.add_argument("--seed", type=count, default=0, help="seed of the order of the samples in the shards")
    pack.add_argument("--val-fraction", type=open_share, default=0.1, help="share of each class held out for "
                      "evaluation when SRC has no split of its own (default 0.1)")
    pack.add_argument("--split-seed", type=count, default=0, help="seed of that hold-out (as vitkit train's)")
    pack.add_argument("--max-bad-fraction", type=share, default=0.01, help="stop when more than this share of "
                      "the images cannot be read (default 0.01)")
    pack.add_argument("--limit-per-class", type=positive_int, default=None, help="pack at most this many "
                      "training images per class (a seeded choice)")
    _args.add_json(pack, "print the index (classes, shards, samples) as JSON on stdout")
    _args.add_runtime(pack, device=False, threads=False, progress=False)
    pack.set_defaults(func=run_pack)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_pack(args) -> int:
    from pathlib import Path

    from ..data.shards import pack_shards
    from ..errors import UsageError
    from . import _args
    from ..files import check_output_folder

    if args.out and args.output:
        raise UsageError(f"the output is given twice ({args.out} and -o {args.output}); give it once, with -o")
    args.out = args.out or args.output
    if not args.out:
        raise UsageError("-o/--output is required: the folder to create")
    check_output_folder(Path(args.out))  # vitkit creates no missing parent folders
    say = _args.status(args)
    index = pack_shards(args.src, args.out, args.shard_size, seed=args.seed, val_fraction=args.val_fraction,
                        split_seed=args.split_seed, max_bad_fraction=args.max_bad_fraction,
                        limit_per_class=args.limit_per_class, log=say)
    if args.json:
        import json

        print(json.dumps(index, indent=2, default=str))
    train = index["train"]
    say(f"{args.out}: {train['samples']:,} training samples in {len(train['shards'])} shard(s), "
        f"{len(index['classes'])} classes; train with --data '{args.out}/{train['pattern']}'")
    if "val" in index:
        say(f"{args.out}: {index['val']['samples']:,} {index['val']['split']} samples in "
            f"{len(index['val']['shards'])} shard(s) (val-*.tar), evaluated after training")
    return 0
