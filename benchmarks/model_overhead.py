"""Forward + backward time of EECA against HF Llava, and of EECA's auxiliary losses, side by side.

Prints two ratios measured in one run on one device (interleaved repeats, medians; CPU time of one
thread on a CPU, wall time on CUDA):
- EECA with the HR branch off and auxiliary weights 0, over `LlavaForConditionalGeneration` with the
  same weights (target <= 1.03: the subclass adds no work);
- EECA with the HR branch on, L_HC + L_EAC on (weights 1, 6 entities per image) over the same model
  with the auxiliary weights 0 (target <= 1.05: the losses are cheap next to the LLM).

Usage: python benchmarks/model_overhead.py [--device cuda] [--repeats 12] [--scale small|medium]
"""

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from eeca.model.build import eeca_config_from_parts
from eeca.model.modeling_eeca import EecaForConditionalGeneration

SCALES = {
    # CPU-friendly: vision 48 px / patch 8 (36 tokens), LLM width 192
    "small": dict(vision=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                              image_size=48, patch_size=8),
                  text=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=3, num_attention_heads=6,
                            num_key_value_heads=3, vocab_size=2000),
                  latents=32, heads=4, head_dim=24, batch=2, text_tokens=64),
    # accelerator: CLIP-L/14-336 token counts with a narrower LLM
    "medium": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=16,
                               image_size=336, patch_size=14),
                   text=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=8, num_attention_heads=16,
                             num_key_value_heads=8, vocab_size=32000),
                   latents=128, heads=16, head_dim=64, batch=4, text_tokens=128),
}


def make_batch(config, scale, device, generator):
    batch, size = scale["batch"], config.vision_config.image_size
    n_visual = config.num_visual_tokens
    ids = torch.randint(10, config.text_config.vocab_size - 1, (batch, scale["text_tokens"] + n_visual),
                        generator=generator)
    ids[:, 4 : 4 + n_visual] = config.image_token_id
    labels = ids.masked_fill(ids == config.image_token_id, -100)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator),
    }
    if config.use_hr_branch:
        grid = config.hr_grid
        inputs["pixel_values_hr"] = torch.randn(batch, grid * grid, 3, size, size, generator=generator)
        inputs["entity_ids"] = torch.randint(10, 200, (batch, 6, 3), generator=generator)
        inputs["entity_mask"] = torch.ones(batch, 6, 3, dtype=torch.bool)
        inputs["hc_labels"] = torch.randint(0, config.num_hierarchical_labels, (batch,), generator=generator)
    return {k: v.to(device) for k, v in inputs.items()}


def step_time(model, inputs, device) -> float:
    """Wall time with CUDA; on a CPU, this process's CPU time on one thread, which other
    processes sharing the cores do not inflate the way they inflate wall time."""
    model.zero_grad(set_to_none=True)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    model(**inputs).loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def compare(pairs, repeats, device) -> list[float]:
    """Median time of each (model, inputs) pair, measured interleaved so drift hits all alike."""
    times = [[] for _ in pairs]
    for _ in range(2):  # warm-up
        for model, inputs in pairs:
            step_time(model, inputs, device)
    for _ in range(repeats):
        for slot, (model, inputs) in enumerate(pairs):
            times[slot].append(step_time(model, inputs, device))
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    args = parser.parse_args()
    device, scale = torch.device(args.device), SCALES[args.scale]
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    vision, text = CLIPVisionConfig(**scale["vision"]), LlamaConfig(**scale["text"])
    image_id = text.vocab_size - 1
    resampler = {"num_hr_latents": scale["latents"], "resampler_heads": scale["heads"],
                 "resampler_head_dim": scale["head_dim"]}

    off_config = eeca_config_from_parts(vision, text, image_id, use_hr_branch=False, hc_loss_weight=0.0,
                                        eac_loss_weight=0.0)
    eeca_off = EecaForConditionalGeneration(off_config).to(device).train()
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_id,
        image_seq_length=off_config.image_seq_length)).to(device).train()
    llava.load_state_dict(eeca_off.state_dict())
    off_inputs = make_batch(off_config, scale, device, generator)
    t_eeca, t_llava = compare([(eeca_off, off_inputs), (llava, off_inputs)], args.repeats, device)
    del eeca_off, llava

    labels = [f"class{i}" for i in range(12)]
    aux_on = EecaForConditionalGeneration(eeca_config_from_parts(
        vision, text, image_id, hierarchical_labels=labels, **resampler)).to(device).train()
    aux_off = EecaForConditionalGeneration(eeca_config_from_parts(
        vision, text, image_id, hierarchical_labels=labels, hc_loss_weight=0.0, eac_loss_weight=0.0,
        **resampler)).to(device).train()
    aux_off.load_state_dict(aux_on.state_dict())
    hr_inputs = make_batch(aux_on.config, scale, device, generator)
    t_on, t_off = compare([(aux_on, hr_inputs), (aux_off, hr_inputs)], args.repeats, device)

    print(f"device={device} scale={args.scale} repeats={args.repeats} batch={scale['batch']}")
    print(f"EECA(HR off, aux off) {t_eeca * 1e3:.1f} ms / HF Llava {t_llava * 1e3:.1f} ms = {t_eeca / t_llava:.3f} "
          "(target <= 1.03)")
    print(f"EECA(HR on) aux on {t_on * 1e3:.1f} ms / aux off {t_off * 1e3:.1f} ms = {t_on / t_off:.3f} "
          "(target <= 1.05)")


if __name__ == "__main__":
    main()
