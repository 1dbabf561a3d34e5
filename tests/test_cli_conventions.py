"""The shared conventions at work, in real processes: a run folder as MODEL in every command that takes one, --json
giving JSON on stdout, --quiet giving nothing on stdout, and the older spellings still working."""

from __future__ import annotations

import json
import shutil

from cli_processes import run_vitkit_many
from test_cli_table import child_env, make_workspace

RUN = "runs/r"


def test_a_run_folder_everywhere_json_and_quiet(tmp_path):
    work = tmp_path / "work"
    make_workspace(work)
    for c in "abc":  # enough for --smoke's batch of 8 after its hold-out of 2 per class
        for i in range(4, 8):
            shutil.copy(work / "data" / c / f"{i % 4}.png", work / "data" / c / f"{i}.png")
    shutil.copytree(work / "data" / "a", work / "two" / "a")  # two of the model's three classes
    shutil.copytree(work / "data" / "c", work / "two" / "c")
    lines = [
        ["train", "--data", "data", "--smoke", "--name", "r", "--quiet", "--no-progress"],
        ["inspect", "posemb", RUN, "-o", "posemb.png", "--json"],
        ["inspect", "attention", RUN, "data", "-o", "attention.png", "--quiet"],
        ["convert", RUN, "-o", "r.safetensors", "--quiet"],
        ["convert", RUN, "old.safetensors"],  # the older positional OUTPUT
        ["export", RUN, "-o", "r.onnx", "--json", "--threads", "1"],
        ["eval", RUN, "--data", "two", "-o", "ev", "--json", "--no-progress"],
        ["eval", "--checkpoint", RUN, "--data", "two", "--out", "ev-old", "--quiet"],  # the older spellings
        ["predict", RUN, "img.png", "--json", "--top-k", "2"],
        ["models", "--json", "--image-size", "32"],
    ]
    results = run_vitkit_many(lines, cwd=work, watch=work, scratch=tmp_path / "captured", env=child_env(tmp_path))
    by_command = {" ".join(r["argv"][:2]): r for r in results}
    for result in results:
        assert result["code"] == 0 and "Traceback" not in result["stderr"], result
    train = results[0]
    assert train["stdout"] == "" and (work / RUN / "model.safetensors").is_file()
    posemb = json.loads(results[1]["stdout"])
    assert posemb["png"] == "posemb.png" and posemb["grid"] == [2, 2]
    attention = results[2]
    assert attention["stdout"] == "" and (work / "attention.png").is_file()
    assert attention["stderr"].count("\n") == 1 and "notes.txt" in attention["stderr"]  # ignored, listed once
    assert results[3]["stdout"] == "" and (work / "r.safetensors").is_file() and (work / "old.safetensors").is_file()
    exported = json.loads(results[5]["stdout"])
    assert exported["path"] == "r.onnx" and exported["checks"] and (work / "r.onnx").is_file()
    evaluated = json.loads(results[6]["stdout"])
    assert evaluated["confusion"]["classes"][:2] == ["a", "c"] and set(evaluated["per_class"]) == {"a", "c"}
    assert (work / "ev" / "confusion.png").is_file() and (work / "ev" / "results.json").is_file()
    assert by_command["eval --checkpoint"]["stdout"].startswith(RUN)  # quiet: the result, no "wrote" line
    assert "wrote" not in by_command["eval --checkpoint"]["stdout"]
    [image] = json.loads(results[8]["stdout"])
    assert len(image["predictions"]) == 2 and image["predictions"][0]["class"] in "abc"
    table = json.loads(results[9]["stdout"])
    assert "ViT-B/16" in [row["name"] for row in table["models"]]
    assert any(line.startswith("ViT-H/14:") for line in table["skipped"])
