"""vitkit's fast path on a tiny ViT at 1 and 2 torch threads: shows what oversubscribed cores do to OpenMP."""
import time, torch, vitkit, statistics, sys, warnings
warnings.filterwarnings("ignore")
from vitkit.models.fast import optimize_for_inference
m = vitkit.create_model("ViT-Ti/16", image_size=32, patch_size=8, depth=2, width=32, num_heads=2, mlp_dim=64, num_classes=5).eval()
x = torch.randn(8,3,32,32)
for t in (1, 2):
    torch.set_num_threads(t)
    f = optimize_for_inference(m)
    with torch.inference_mode():
        for _ in range(3): f(x)
        ts = []
        for _ in range(20):
            s = time.perf_counter(); f(x); ts.append(time.perf_counter() - s)
    print(t, f"{statistics.median(ts)*1e3:.2f} ms", f"{min(ts)*1e3:.2f}")
print(torch.__config__.parallel_info())
