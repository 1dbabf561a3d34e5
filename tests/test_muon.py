"""optimizer = "muon": Muon on the encoder blocks' weight matrices, AdamW on everything else, as one optimizer that
the schedule, the checkpoints and --resume treat like any other."""

from __future__ import annotations

import copy

import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.errors import UsageError
from vitkit.training import checkpoint as ckpt
from vitkit.training.optim import BatchedMuon, MuonAdamW, OptimizerSettings, build_optimizer, muon_parameters
from vitkit.training.trainer import train

from test_train import tiny_config, train_records


def quiet(message):
    pass


SETTINGS = OptimizerSettings(optimizer="muon", lr=3e-3, weight_decay=0.05, beta1=0.9, beta2=0.99, momentum=0.95)


def tiny_model():
    torch.manual_seed(0)
    return vitkit.create_model("ViT-Ti/4", num_classes=5, image_size=16, width=32, depth=2, num_heads=2, mlp_dim=64)


def test_muon_takes_the_blocks_weight_matrices_and_adamw_the_rest():
    model = tiny_model()
    chosen = muon_parameters(model)
    assert sorted(chosen) == sorted(f"blocks.{i}.{layer}.weight" for i in range(2)
                                    for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
    optimizer = build_optimizer(model, SETTINGS)
    assert isinstance(optimizer, MuonAdamW)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})  # each once
    assert {id(p) for p in optimizer.muon.param_groups[0]["params"]} == \
        {id(p) for name, p in model.named_parameters() if name in chosen}


def test_each_part_steps_as_torchs_own_optimizer_would():
    """The same gradients through MuonAdamW and through a torch.optim.Muon and AdamW set up by hand: equal."""
    model, reference = tiny_model(), tiny_model()
    optimizer = build_optimizer(model, SETTINGS)
    named = dict(reference.named_parameters())
    matrices = [named[n] for n in muon_parameters(reference)]
    muon = torch.optim.Muon(matrices, lr=SETTINGS.lr, weight_decay=SETTINGS.weight_decay, momentum=0.95,
                            nesterov=True, adjust_lr_fn="match_rms_adamw")
    rest = {n: p for n, p in named.items() if n not in muon_parameters(reference)}
    decayed = [p for n, p in rest.items() if p.ndim > 1 and n not in ("pos_embed", "cls_token")]
    exempt = [p for n, p in rest.items() if not (p.ndim > 1 and n not in ("pos_embed", "cls_token"))]
    adamw = torch.optim.AdamW([{"params": decayed, "weight_decay": SETTINGS.weight_decay},
                               {"params": exempt, "weight_decay": 0.0}], lr=SETTINGS.lr, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        optimizer.step()
        muon.step()
        adamw.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    moved = model.blocks[0].attn.qkv.weight - tiny_model().blocks[0].attn.qkv.weight
    assert moved.abs().max() > 0


@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw", "spectral_unclamped"])
def test_batched_muon_is_torchs_muon_for_every_learning_rate_scale(adjust_lr_fn):
    """Tall, wide and repeated shapes, each of torch's `adjust_lr_fn` scales: BatchedMuon steps as torch.optim.Muon."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(96, 32), (96, 32), (32, 96), (32, 32)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=True, adjust_lr_fn=adjust_lr_fn)
    try:
        reference = torch.optim.Muon(theirs, **settings)
    except ValueError:
        pytest.skip(f"this torch has no adjust_lr_fn={adjust_lr_fn!r}")
    batched = BatchedMuon(ours, **settings)
    for _ in range(3):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        batched.step()
        reference.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_muon_run_resumes_to_the_same_losses_and_a_changed_optimizer_is_named(tmp_path):
    config = tiny_config(tmp_path, optimizer="muon", momentum=0.95, steps=6, checkpoint_every=2, keep_checkpoints=0)
    full = train(config.replace(name="full"), log=quiet)
    part = train(config.replace(name="part", stop_after=3), log=quiet)
    run = tmp_path / "runs" / "part"
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]
    assert main(["train", "--resume", str(run), "--progress", "false", "--num-workers", "0"]) == 0
    assert [r["loss"] for r in train_records(run)] == [r["loss"] for r in train_records(full.run_dir)]
    a = vitkit.load(full.run_dir / "model.safetensors").state_dict()
    b = vitkit.load(run / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [r["loss"] for r in train_records(full.run_dir)]
    assert losses[-1] < losses[0]
    adam = train(config.replace(name="adam", optimizer="adam", stop_after=2), log=quiet)
    with pytest.raises(UsageError, match="was the model or optimizer changed"):
        train(copy.deepcopy(config).replace(name="adam"), resume=adam.run_dir, log=quiet)


def test_muon_with_fsdp_is_refused():
    with pytest.raises(UsageError, match="optimizer='muon' needs parallel='ddp'"):
        tiny_config(__import__("pathlib").Path("/nonexistent"), optimizer="muon", parallel="fsdp").validate()


def test_two_ddp_processes_step_muon_as_one_process_does(tmp_path):
    """torchrun --nproc-per-node 2: the averaged gradients orthogonalised on each rank give one process's steps."""
    from test_distributed_mixing import run_both

    single, ddp = run_both(tmp_path, "muon", dict(steps=4, warmup_steps=1, optimizer="muon", momentum=0.95, lr=0.02,
                                                 weight_decay=1e-4, limit_per_class=6, seed=3, batch_size=8))
    assert len(single) == 4 and ddp == pytest.approx(single, rel=1e-4, abs=1e-6)
    assert single[-1] != single[0]
