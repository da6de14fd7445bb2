"""Run as `python -I remote_code_load.py CHECKPOINT OUT.pt`: load an EECA checkpoint through transformers'
Auto classes with trust_remote_code in a Python that cannot import eeca, and save the processor's
inputs and the model's logits for one image and prompt. Exits 3 if eeca is importable after all."""

import os
import sys

PROMPT = "user : <image> what is this landmark ?"


def probe_image():
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.arange(40 * 48 * 3).reshape(40, 48, 3) % 251).astype("uint8"))


def main(path: str, out: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    inputs = processor(images=[probe_image()], text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save({"classes": [type(config).__name__, type(model).__name__, type(processor).__name__],
                "modules": sorted({type(model).__module__, type(processor).__module__}),
                "inputs": dict(inputs), "logits": logits}, out)


if __name__ == "__main__":
    # an editable install of eeca is a sys.path entry holding eeca/: drop every such entry
    sys.path = [p for p in sys.path if not os.path.exists(os.path.join(p or ".", "eeca", "__init__.py"))]
    try:
        import eeca  # noqa: F401
    except ImportError:
        main(sys.argv[1], sys.argv[2])
    else:
        sys.exit(3)
