"""`vitkit finetune --from NAME|CKPT --data DIR --image-size 384`: the paper's fine-tuning (Section 3.2,
Appendix B.1.1): the pre-trained head dropped for a zero-initialised one sized to the data's classes, the position
embeddings resampled to the new grid, SGD with momentum, cosine decay, clipping at 1."""

from __future__ import annotations

ORDER = 31


def register(sub) -> None:
    import argparse

    from .train import add_common_arguments, run

    p = sub.add_parser("finetune", help="fine-tune a checkpoint on new data at a new resolution (the paper's recipe)",
                       description="Fine-tune any checkpoint vitkit reads (vitkit, Google .npz, timm, Hugging Face): "
                       "a new zero-initialised head for the data's classes, position embeddings resampled to "
                       "--image-size, and the fine-tuning recipe (default recipes/finetune.toml: SGD momentum 0.9, "
                       "no weight decay, cosine decay, clipping at 1, batch 512).",
                       epilog="examples:\n  vitkit finetune --from vit-b16-in21k --data DIR --image-size 384   a "
                       "published checkpoint (vitkit models --pretrained)\n  vitkit finetune --init-from runs/NAME --data "
                       "DIR --image-size 384",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.set_defaults(func=run, default_recipe="finetune", finetune=True)
