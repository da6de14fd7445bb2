"""`EecaProcessor`: one image -> the LR view and the HR crops, and `<image>` expanded to every visual token.

Paper section 4.2: "Starting with a high-resolution image, we generate a low-resolution version via
bilinear interpolation", and the HR image is divided into four sub-images. Here the image processor
(the CLIP checkpoint's: resize shortest edge, centre crop, normalise) makes the HR view at G times its
size (672 px for CLIP-336 and G = 2); `pixel_values` is that view bilinearly downsampled (with
antialiasing, as PIL's bilinear resize) to the vision size, and `pixel_values_hr` its G x G crops in
row-major order. The HR-off ablation uses the same LR view, so the two differ only in the branch.

Each `<image>` becomes P + N_LR placeholders (704 at paper geometry; N_LR = 576 with the HR branch
off). A `max_length` that would cut through them is an error naming the sample, never a silent
mismatch between placeholders and visual tokens.
"""

import re

import torch.nn.functional as F
from transformers import LlavaProcessor
from transformers.processing_utils import _UNMARKED

from .configuration_eeca import EecaConfig  # relative: this file is copied beside every checkpoint


def _scaled_size(size, factor: int) -> dict:
    """An image-processor size (dict or SizeDict of edge lengths) with every edge scaled by `factor`."""
    edges = ("height", "width", "shortest_edge", "longest_edge")
    return {key: value * factor for key, value in dict(size).items() if key in edges}


class EecaProcessor(LlavaProcessor):
    """Llava's processor with the HR crops (`pixel_values_hr`) and EECA's placeholder count.

    Args (beyond `LlavaProcessor`'s):
        use_hr_branch: make `pixel_values_hr` and count the P HR tokens in the placeholders.
        hr_grid: G; the HR view is G * vision size square, cut into G x G crops.
        num_hr_latents: P, the HR tokens per image.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=0,
        use_hr_branch: bool = True,
        hr_grid: int = 2,
        num_hr_latents: int = 128,
        **kwargs,
    ):
        if hr_grid < 1 or num_hr_latents < 1:
            raise ValueError(f"EecaProcessor: hr_grid and num_hr_latents must be >= 1, got {hr_grid}, {num_hr_latents}")
        self.use_hr_branch = use_hr_branch
        self.hr_grid = hr_grid
        self.num_hr_latents = num_hr_latents
        super().__init__(
            image_processor,
            tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @property
    def vision_size(self) -> tuple[int, int]:
        """(height, width) the vision tower sees: the image processor's crop size."""
        crop = self.image_processor.crop_size
        return crop["height"], crop["width"]

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image: P (HR branch on) + the LR tokens (Llava's count)."""
        height, width = self.vision_size
        num_lr = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        if self.vision_feature_select_strategy == "default":
            num_lr -= 1
        return num_lr + (self.num_hr_latents if self.use_hr_branch else 0)

    def _process_images(self, images, **kwargs):
        grid = self.hr_grid
        height, width = self.vision_size
        kwargs = {k: v for k, v in kwargs.items() if k not in ("size", "crop_size")}
        kwargs["return_tensors"] = "pt"
        high = self.image_processor(
            images,
            size=_scaled_size(self.image_processor.size, grid),
            crop_size={"height": height * grid, "width": width * grid},
            **kwargs,
        )["pixel_values"]  # [N, 3, G*H, G*W]
        low = F.interpolate(high, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        processed = {"pixel_values": low}  # [N, 3, H, W]
        if self.use_hr_branch:
            crops = high.view(high.shape[0], 3, grid, height, grid, width).permute(0, 2, 4, 1, 3, 5)
            processed["pixel_values_hr"] = crops.reshape(high.shape[0], grid * grid, 3, height, width).contiguous()
        replacements = [self.image_token * self.num_image_tokens] * low.shape[0]
        return processed, replacements

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, **kwargs)
        if image_sizes is not None:
            data["num_image_tokens"] = [self.num_image_tokens] * len(image_sizes)
        return data

    def _check_special_mm_tokens(self, text, text_inputs, modalities):
        """Every placeholder in the expanded text must survive tokenisation (no truncation through them)."""
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        pattern = _UNMARKED + re.escape(self.image_token)
        for index, (ids, sample) in enumerate(zip(input_ids, text, strict=True)):
            expected = len(re.findall(pattern, sample))
            found = list(ids).count(self.image_token_id)
            if found != expected:
                raise ValueError(
                    f"sample {index}: {found} of its {expected} image placeholder tokens survive tokenisation "
                    f"({expected // max(self.num_image_tokens, 1)} image(s) x {self.num_image_tokens}); max_length "
                    "truncation cut through them. Raise max_length (it must count the placeholders) or drop the sample."
                )

    @property
    def model_input_names(self) -> list[str]:
        names = list(super().model_input_names)
        if self.use_hr_branch and "pixel_values_hr" not in names:
            names.append("pixel_values_hr")
        return names


__all__ = ["EecaProcessor"]


def processor_for(config, processor):
    """A processor whose placeholders and pixels match ``config``: for an EECA config, an `EecaProcessor`
    with the config's HR settings (a checkpoint loaded with ``use_hr_branch`` or ``num_hr_latents``
    overridden, or a llava-hf checkpoint loaded as EECA, keeps the processor saved beside it, which
    would expand the wrong number of ``<image>`` tokens); any other config keeps ``processor``."""
    if not isinstance(config, EecaConfig):
        return processor
    return EecaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        image_token=processor.image_token,
        num_additional_image_tokens=processor.num_additional_image_tokens,
        use_hr_branch=config.use_hr_branch,
        hr_grid=config.hr_grid,
        num_hr_latents=config.num_hr_latents,
    )
