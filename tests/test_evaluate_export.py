"""`eeca export`: MGLD as a datasets folder with the images inside, and an lmms-eval task scored by eeca's judges."""

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eeca.evaluate.export import export_mgld
from eeca.io import InputError
from train_helpers import save_tiny_llava, write_llava_json

TYPED_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
SRC = Path(__file__).resolve().parents[1] / "src"
LMMS_PYTHON = Path(os.environ.get("EECA_LMMS_PYTHON", "/work/venvs/lmms/bin/python"))


class _TaskLoader(yaml.SafeLoader):
    """Reads lmms-eval's `!function module.name` tags as plain strings."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _mgld(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    data = write_llava_json(tmp_path / "mgld", n=n)
    truth = tmp_path / "landmarks.jsonl"
    truth.write_text("".join(json.dumps({"landmark_id": i, "name": f"tower {i}", "place": f"Northvale, Vasta {i}",
                                         "aliases": [f"old tower {i}"]}) + "\n" for i in range(n)))
    return data, truth


def _load_utils(task_dir: Path):
    spec = importlib.util.spec_from_file_location("mgld_task_utils", task_dir / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_round_trip_embeds_images_and_scores_with_the_rule_judge(tmp_path):
    import datasets

    data, truth = _mgld(tmp_path)
    originals = {f"s{i}": np.asarray(Image.open(tmp_path / "mgld" / "img" / f"{i}.jpg").convert("RGB")) for i in range(4)}
    sizes = export_mgld(data, data.parent, tmp_path / "out", train_json=data, truth=truth)
    assert sizes == {"test": 4, "train": 4}
    shutil.rmtree(tmp_path / "mgld")  # the exported folder must not need the image tree

    dd = datasets.load_from_disk(str(tmp_path / "out" / "hf"))
    assert sorted(dd) == ["test", "train"]
    row = dd["test"][1]
    assert (row["id"], row["question"], row["landmark_name"], row["place"], row["aliases"], row["entities"]) == (
        "s1", "what is this landmark?", "tower 1", "Northvale, Vasta 1", ["old tower 1"],
        ["red brick facade", "twin spires"])
    assert row["answer"] == "it is the red tower of northvale 1." and row["hierarchical_label"] == "church"
    for r in dd["test"]:
        assert np.array_equal(np.asarray(r["image"].convert("RGB")), originals[r["id"]])

    task_dir = tmp_path / "out" / "lmms_eval" / "mgld"
    task = yaml.load((task_dir / "mgld.yaml").read_text(), Loader=_TaskLoader)
    assert task["dataset_path"] == str((tmp_path / "out" / "hf").resolve()) and task["dataset_kwargs"]["load_from_disk"]
    assert task["process_results"] == "!function utils.mgld_process_results"
    assert [m["metric"] for m in task["metric_list"]] == ["mgld_accuracy", "mgld_unknown", "mgld_failed"]

    utils = _load_utils(task_dir)
    doc = dd["test"][1]
    assert utils.mgld_doc_to_visual(doc)[0].size == (48, 40)
    assert utils.mgld_doc_to_text(doc, {"pre_prompt": "Q: ", "post_prompt": " A:"}) == "Q: what is this landmark? A:"
    rows = [utils.mgld_process_results(doc, [text])["mgld_accuracy"] for text in
            ("it is the old tower 1.", "a church in vasta 1 with twin spires", "no idea")]
    assert [r["level"] for r in rows] == ["known", "weakly_unknown", "unknown"]  # hand-checked against rule_verdict
    assert utils.mgld_accuracy(rows) == pytest.approx(100 / 3) and utils.mgld_unknown(rows) == pytest.approx(100 / 3)
    failed = {"id": "x", "level": None, "status": "failed", "explanation": "request failed"}
    assert utils.mgld_failed([*rows, failed]) == 1 and utils.mgld_accuracy([*rows, failed]) == pytest.approx(100 / 3)


def test_a_record_whose_image_is_missing_names_the_file_and_record(tmp_path):
    data, _ = _mgld(tmp_path)
    (tmp_path / "mgld" / "img" / "2.jpg").unlink()
    with pytest.raises(InputError, match=r"data.json: record 2 \(id 's2'\): field 'image': cannot read"):
        export_mgld(data, data.parent, tmp_path / "out")
    assert not (tmp_path / "out" / "hf").exists()


def _lmms_eval_importable() -> str | None:
    if not LMMS_PYTHON.exists():
        return f"no lmms-eval Python at {LMMS_PYTHON} (set EECA_LMMS_PYTHON)"
    probe = subprocess.run([str(LMMS_PYTHON), "-c", "import importlib.util as u; "
                            "raise SystemExit(not (u.find_spec('lmms_eval') and u.find_spec('decord')))"],
                           capture_output=True, text=True, timeout=120)
    return None if probe.returncode == 0 else f"lmms-eval (with decord, which its llava_hf needs) not found in {LMMS_PYTHON}"


@pytest.mark.slow
def test_lmms_eval_runs_the_exported_task_on_a_tiny_llava_hf_model(tmp_path):
    reason = _lmms_eval_importable()
    if reason:
        pytest.skip(reason)
    data, truth = _mgld(tmp_path)
    export_mgld(data, data.parent, tmp_path / "out", truth=truth, max_new_tokens=8)
    model = save_tiny_llava(tmp_path / "tiny-llava", style="simple")
    # lmms-eval's llava_hf sends typed content ({"type": "image"}, {"type": "text"}) through the chat template
    (model / "chat_template.jinja").write_text(TYPED_TEMPLATE)
    run_dir = tmp_path / "run"  # lmms-eval reads `--tasks mgld` as a folder of YAMLs when ./mgld exists
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_HOME=str(tmp_path / "hf_home"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [str(LMMS_PYTHON), "-m", "lmms_eval", "--model", "llava_hf",
         "--model_args", f"pretrained={model},device=cpu,device_map=cpu,dtype=float32", "--include_path", str(tmp_path / "out" / "lmms_eval"),
         "--tasks", "mgld", "--batch_size", "1", "--output_path", str(tmp_path / "results"), "--log_samples"],
        cwd=run_dir, env=env, capture_output=True, text=True, timeout=1500)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = sorted((tmp_path / "results").rglob("*results.json"))
    assert found, proc.stdout[-2000:]
    results = json.loads(found[-1].read_text())["results"]["mgld"]
    print(json.dumps(results, indent=1))
    accuracy = results["mgld_accuracy,none"]
    assert 0.0 <= accuracy <= 100.0 and results["mgld_failed,none"] == 0  # the rule judge never fails
    samples = [json.loads(line) for p in (tmp_path / "results").rglob("*mgld*.jsonl") for line in p.read_text().splitlines()]
    assert len(samples) == 4 and {s["mgld_accuracy"]["status"] for s in samples} == {"ok"}
