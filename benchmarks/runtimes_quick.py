"""Quick side-by-side of vitkit (fast path), ONNX Runtime and OpenVINO on ViT-S/16, batch 1, fp32, PyTorch's default threads
(measured for docs/pending/deploy.md while the full `vitkit bench --peers ort openvino` ran)."""
import time, torch, numpy as np, vitkit, statistics, warnings
warnings.filterwarnings("ignore")
from vitkit.export import export_onnx
from vitkit.models.fast import optimize_for_inference, quantize_int8
import onnxruntime as ort, openvino as ov
torch.manual_seed(0)
m = vitkit.create_model("ViT-S/16", num_classes=1000).eval()
torch.nn.init.normal_(m.head.weight, std=0.02)
t=time.time(); export_onnx(m, "s16.onnx", dynamic_image_size=False, check=False); print("export", time.time()-t)
x = torch.randn(1,3,224,224)
fast = optimize_for_inference(m)
so = ort.SessionOptions(); so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL; so.intra_op_num_threads = torch.get_num_threads()
s = ort.InferenceSession("s16.onnx", so, providers=["CPUExecutionProvider"])
core = ov.Core()
c = core.compile_model(core.read_model("s16.onnx"), "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
req = c.create_infer_request()
xn = x.numpy()
fns = {"vitkit": lambda: fast(x), "ort": lambda: s.run(None, {"images": xn}), "ov": lambda: req.infer({0: xn})}
with torch.inference_mode():
    for f in fns.values(): f(); f()
    ts = {k: [] for k in fns}
    for r in range(7):
        for k, f in fns.items():
            t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
for k, v in ts.items(): print(k, f"{statistics.median(v)*1e3:.1f} ms", [f"{a/b:.2f}" for a, b in zip(v, ts['vitkit'])])
with torch.inference_mode():
    print(np.abs(fast(x).numpy() - s.run(None, {"images": xn})[0]).max(), np.abs(fast(x).numpy() - list(req.infer({0: xn}).values())[0]).max())
