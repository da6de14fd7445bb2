"""An EECA checkpoint loads through transformers' Auto classes with trust_remote_code in a Python where
eeca cannot be imported, and computes the same logits as the in-package load."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoProcessor

from eeca.model import EecaConfig, EecaForConditionalGeneration, EecaProcessor
from eeca.model.tiny import tiny_eeca

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from remote_code_load import PROMPT, probe_image  # noqa: E402


def test_checkpoint_loads_with_trust_remote_code_where_eeca_is_not_importable(tmp_path):
    model, processor = tiny_eeca(seed=3, hierarchical_labels=["bridge", "church"])
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    for name in ("configuration_eeca.py", "modeling_eeca.py", "losses.py", "processing_eeca.py"):
        text = (ckpt / name).read_text()
        assert "from eeca" not in text and "import eeca" not in text, name  # importable without eeca

    config = AutoConfig.from_pretrained(ckpt)
    assert isinstance(config, EecaConfig)
    assert config.auto_map == {"AutoConfig": "configuration_eeca.EecaConfig",
                               "AutoModelForImageTextToText": "modeling_eeca.EecaForConditionalGeneration"}
    local = EecaForConditionalGeneration.from_pretrained(ckpt).eval()
    local_processor = AutoProcessor.from_pretrained(ckpt)
    assert isinstance(local_processor, EecaProcessor)
    inputs = local_processor(images=[probe_image()], text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        expected = local(**inputs).logits

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    out = tmp_path / "remote.pt"
    proc = subprocess.run([sys.executable, "-I", str(HERE / "remote_code_load.py"), str(ckpt), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 3, "eeca was importable in the subprocess"
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = torch.load(out)
    assert remote["classes"] == ["EecaConfig", "EecaForConditionalGeneration", "EecaProcessor"]
    assert all(m.startswith("transformers_modules.") for m in remote["modules"]), remote["modules"]
    assert set(remote["inputs"]) == set(inputs) and "pixel_values_hr" in remote["inputs"]  # images not dropped
    for key, value in inputs.items():
        torch.testing.assert_close(remote["inputs"][key], value, atol=0, rtol=0)
    delta = (remote["logits"] - expected).abs().max().item()
    print(f"max |delta logits| = {delta:.3g} over {tuple(expected.shape)}")
    assert delta <= 1e-5
