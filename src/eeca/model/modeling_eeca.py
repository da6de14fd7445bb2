"""The EECA model (paper section 4.2, App. A): LLaVA with a high-resolution branch and L_HC / L_EAC.

Reads top-down: the output dataclasses, the Perceiver resampler, the inner model (vision tower, both
branches, LLM), the model with the LM head and the three losses.

- LR branch: exactly transformers' Llava (vision_feature_layer -2, CLS dropped, 2-layer GELU MLP);
  576 tokens at 336 px.
- HR branch: the G x G crops of the image at G * 336 px and the LR image go through the SAME vision
  tower (5 x 576 = 2,880 features at paper geometry); a learned embedding per sub-image is added
  (the toolkit's addition, ``sub_image_embeddings``); a Flamingo-style Perceiver resampler [2] (learned
  latents attending to concat(features, latents), pre-LayerNorm, FFN x4, final LayerNorm) gives
  P = 128 latents; an MLP of the LR projector's shape maps them to the LLM width (the toolkit's
  addition, ``hr_projector="mlp"``; ``"linear"`` is a single linear map).
- Visual tokens V = [V_HR (P); V_LR (576)] fill the expanded `<image>` placeholders (704 per image).
- Total loss l1 L_LM + l2 L_HC + l3 L_EAC (`losses.py`); each term is returned by name.

With `use_hr_branch=False` and zero auxiliary weights the model computes exactly what
`LlavaForConditionalGeneration` computes with the same weights, and a llava-hf checkpoint loads
into it (the HR modules and heads are reported as newly initialised).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers import initialization as init
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
)
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import select_hidden_states

# relative imports only: these files are copied beside every checkpoint and imported there without eeca
from .configuration_eeca import EecaConfig
from .losses import entity_aware_contrastive_loss, hierarchical_classification_loss


@dataclass
class EecaImageOutputs(BaseModelOutputWithPooling):
    """Vision-side outputs of `EecaModel.get_image_features`.

    pooler_output: list of B tensors [T, d_llm], the visual tokens of each image, T = P + N_LR with the
        HR branch on ([V_HR; V_LR]), N_LR without (what fills the `<image>` placeholders).
    hr_tokens: [B, P, d_llm], V_HR (None with the HR branch off).
    """

    hr_tokens: torch.FloatTensor | None = None


@dataclass
class EecaCausalLMOutputWithPast(LlavaCausalLMOutputWithPast):
    """LLaVA's output plus each loss term by name.

    loss: scalar, l1 L_LM + l2 L_HC + l3 L_EAC over the terms that were computed (None when none was).
    logits: [B, L, vocab] (or the kept positions with `logits_to_keep`).
    loss_lm: scalar, the causal-LM cross-entropy (None without `labels`).
    loss_hc: scalar, L_HC, mean over labelled images (None without `hc_labels` or with weight 0).
    loss_eac: scalar, L_EAC (None without `entity_ids` or with weight 0).
    logit_scale: scalar, the clamped 1 / tau used by L_EAC (None with the HR branch off).
    """

    loss_lm: torch.FloatTensor | None = None
    loss_hc: torch.FloatTensor | None = None
    loss_eac: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class EecaResamplerAttention(nn.Module):
    """Perceiver cross-attention: latents query concat(media features, latents), both pre-normed."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        batch, num_latents, _ = latents.shape
        media = self.norm_media(media)  # [B, N, D]
        latents = self.norm_latents(latents)  # [B, P, D]
        q = self.to_q(latents).view(batch, num_latents, self.heads, self.head_dim).transpose(1, 2)  # [B, h, P, hd]
        kv_input = torch.cat([media, latents], dim=1)  # [B, N + P, D]
        k, v = self.to_kv(kv_input).view(batch, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, h, P, hd]
        return self.to_out(out.transpose(1, 2).reshape(batch, num_latents, -1))


class EecaResamplerFeedForward(nn.Module):
    """Pre-LayerNorm GELU FFN with `ff_mult` expansion."""

    def __init__(self, dim: int, ff_mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ff_mult, bias=False)
        self.fc2 = nn.Linear(dim * ff_mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class EecaPerceiverResampler(nn.Module):
    """Flamingo's Perceiver resampler over the sub-images of one image.

    Input [B, S_sub, N, D] (S_sub = 1 + G * G sub-images of N vision features each) -> [B, P, D].
    """

    def __init__(self, config: EecaConfig):
        super().__init__()
        dim = config.vision_config.hidden_size
        num_sub_images = 1 + config.hr_grid**2
        self.num_sub_images = num_sub_images
        self.latents = nn.Parameter(torch.empty(config.num_hr_latents, dim))
        # the toolkit's addition (config.sub_image_embeddings): which sub-image a feature comes from
        self.sub_image_embeddings = (nn.Parameter(torch.empty(num_sub_images, dim))
                                     if config.sub_image_embeddings else None)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    EecaResamplerAttention(dim, config.resampler_heads, config.resampler_head_dim),
                    EecaResamplerFeedForward(dim, config.resampler_ff_mult),
                ]
            )
            for _ in range(config.resampler_depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.num_sub_images:
            raise ValueError(f"resampler expects {self.num_sub_images} sub-images per image, got {features.shape[1]}")
        media = features  # [B, S_sub, N, D]
        if self.sub_image_embeddings is not None:
            media = media + self.sub_image_embeddings[None, :, None, :].to(features.dtype)
        media = media.flatten(1, 2)  # [B, S_sub * N, D]
        latents = self.latents.to(media.dtype).expand(media.shape[0], -1, -1)  # [B, P, D]
        for attention, feed_forward in self.layers:
            latents = latents + attention(media, latents)
            latents = latents + feed_forward(latents)
        return self.norm(latents)


class EecaLogitScale(nn.Module):
    """L_EAC's learnable inverse temperature 1 / tau = exp(t), clamped (a module, so that PEFT's
    `modules_to_save` can keep it trainable and save it with an adapter)."""

    def __init__(self, max_value: float):
        super().__init__()
        self.max_value = max_value
        self.t = nn.Parameter(torch.empty(()))

    def forward(self) -> torch.Tensor:
        return self.t.exp().clamp(max=self.max_value)


class EecaPreTrainedModel(LlavaPreTrainedModel):
    config: EecaConfig
    _no_split_modules = ["EecaPerceiverResampler"]

    def _init_weights(self, module):
        super()._init_weights(module)
        std = getattr(self.config.get_text_config(), "initializer_range", 0.02)
        if isinstance(module, EecaPerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=std)
            if module.sub_image_embeddings is not None:
                init.normal_(module.sub_image_embeddings, mean=0.0, std=std)
        elif isinstance(module, EecaLogitScale):
            init.constant_(module.t, self.config.eac_logit_scale_init)


class EecaModel(EecaPreTrainedModel, LlavaModel):
    """Vision tower + LR projector + (HR resampler + HR projector) + LLM, without the LM head."""

    def __init__(self, config: EecaConfig):
        EecaPreTrainedModel.__init__(self, config)
        # the same three submodules, under the same names, as LlavaModel: llava-hf weights load as they are
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        if config.use_hr_branch:
            self.hr_resampler = EecaPerceiverResampler(config)
            # "mlp": the toolkit's addition, the LR projector's shape; "linear": only the width change
            self.hr_projector = (LlavaMultiModalProjector(config) if config.hr_projector == "mlp" else
                                 nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size))
        else:
            self.hr_resampler = self.hr_projector = None
        self.post_init()

    @merge_with_config_defaults
    @can_return_tuple
    @select_hidden_states("vision_feature_layer")
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_values_hr: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | EecaImageOutputs:
        """Visual tokens per image: [V_HR; V_LR] with the HR branch on, V_LR (HF Llava's) without.

        Args:
            pixel_values: [B, 3, S, S], the LR image.
            pixel_values_hr: [B, G * G, 3, S, S], the HR crops (row-major); required with the HR branch on.
        """
        if not self.config.use_hr_branch:
            if pixel_values_hr is not None:
                raise ValueError("pixel_values_hr given but the model's HR branch is off (use_hr_branch=False)")
            out = LlavaModel.get_image_features(
                self,
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                image_sizes=image_sizes,
                **kwargs,
            )
            return EecaImageOutputs(**out)
        if pixel_values_hr is None:
            raise ValueError("the HR branch is on (use_hr_branch=True): pass pixel_values_hr [B, G*G, 3, S, S]")
        if image_sizes is not None:
            raise ValueError("image_sizes is not supported with the HR branch (images are square crops)")
        batch, num_crops = pixel_values_hr.shape[:2]
        if num_crops != self.config.hr_grid**2 or pixel_values_hr.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values_hr must be [B={pixel_values.shape[0]}, {self.config.hr_grid**2}, 3, S, S], "
                f"got {tuple(pixel_values_hr.shape)}"
            )
        # one tower pass over the LR images and all crops: [B + B * G * G, 3, S, S]
        pixels = torch.cat([pixel_values, pixel_values_hr.flatten(0, 1).to(pixel_values.dtype)], dim=0)
        image_outputs = self.vision_tower(pixels, return_dict=True, **kwargs)
        selected = image_outputs.hidden_states[vision_feature_layer]
        if vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS, as HF Llava
        lr_features = selected[:batch]  # [B, N, D]
        crop_features = selected[batch:].view(batch, num_crops, *selected.shape[1:])  # [B, G*G, N, D]
        sub_images = torch.cat([lr_features.unsqueeze(1), crop_features], dim=1)  # [B, 1 + G*G, N, D]
        hr_tokens = self.hr_projector(self.hr_resampler(sub_images))  # [B, P, d_llm]
        lr_tokens = self.multi_modal_projector(lr_features)  # [B, N, d_llm]
        visual = torch.cat([hr_tokens, lr_tokens], dim=1)  # [B, P + N, d_llm]
        return EecaImageOutputs(
            last_hidden_state=image_outputs.last_hidden_state,
            hidden_states=image_outputs.hidden_states,
            attentions=image_outputs.attentions,
            pooler_output=list(visual),
            hr_tokens=hr_tokens,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_hr: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ):
        """LlavaModel.forward with the HR crops: the visual tokens are computed here, then placed by Llava."""
        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs at the same time")
        if pixel_values is not None:
            vision_kwargs = {k: v for k, v in kwargs.items() if k in ("output_attentions", "output_hidden_states")}
            mm_encoder_outputs = {
                "image": self.get_image_features(
                    pixel_values=pixel_values,
                    pixel_values_hr=pixel_values_hr,
                    vision_feature_layer=vision_feature_layer,
                    vision_feature_select_strategy=vision_feature_select_strategy,
                    image_sizes=image_sizes,
                    return_dict=True,
                    **vision_kwargs,
                )
            }
        return LlavaModel.forward(self, input_ids=input_ids, mm_encoder_outputs=mm_encoder_outputs, **kwargs)


class EecaForConditionalGeneration(EecaPreTrainedModel, LlavaForConditionalGeneration):
    """EECA: `LlavaForConditionalGeneration` with the HR branch, L_HC head and L_EAC temperature."""

    def __init__(self, config: EecaConfig):
        config.validate_eeca()
        EecaPreTrainedModel.__init__(self, config)
        self.model = EecaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        text_width = config.text_config.hidden_size
        self.hc_head = nn.Linear(text_width, config.num_hierarchical_labels) if config.num_hierarchical_labels else None
        # only the HR branch has tokens for L_EAC
        self.eac_logit_scale = EecaLogitScale(config.eac_max_logit_scale) if config.use_hr_branch else None
        self.post_init()

    def get_image_features(self, pixel_values, pixel_values_hr=None, **kwargs):
        return self.model.get_image_features(pixel_values=pixel_values, pixel_values_hr=pixel_values_hr, **kwargs)

    def entity_embeddings(self, entity_ids: torch.LongTensor, entity_mask: torch.Tensor) -> torch.Tensor:
        """e_ij = mean of the LLM input-embedding rows of entity j's sub-tokens.

        Args:
            entity_ids: [B, M, L] token ids (padding anywhere the mask is False).
            entity_mask: [B, M, L] bool, True on real sub-tokens.
        Returns:
            [B, M, d_llm]; zeros for padded entities; detached when `config.entity_stop_gradient`.
        """
        embeds = self.get_input_embeddings()(entity_ids)  # [B, M, L, d]
        weights = entity_mask.to(embeds.dtype).unsqueeze(-1)  # [B, M, L, 1]
        mean = (embeds * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1)  # [B, M, d]
        return mean.detach() if self.config.entity_stop_gradient else mean

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        pixel_values_hr: torch.Tensor | None = None,
        entity_ids: torch.LongTensor | None = None,
        entity_mask: torch.Tensor | None = None,
        hc_labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple | EecaCausalLMOutputWithPast:
        """Llava's forward plus the HR crops, entities and hierarchical labels.

        Args (beyond Llava's):
            pixel_values_hr: [B, G*G, 3, S, S] HR crops (required with the HR branch on and pixel_values).
            entity_ids: [B, M, L] long, entity_mask: [B, M, L] bool: tokenised, padded entities -> L_EAC.
            hc_labels: [B] long, hierarchical label index, -100 = none -> L_HC.
            num_items_in_batch (kwarg, from the Trainer): the label-token count of the whole accumulated
                batch; L_LM is then a token sum divided by it. L_HC and L_EAC stay means over this
                micro-batch's images. `loss` is l1 L_LM + l2 L_HC + l3 L_EAC of these values; how the
                terms add up over accumulation steps and processes is decided in one place,
                `eeca.train.trainer.EecaTrainer`, which recomposes the total from the named parts.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_hr=pixel_values_hr,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs[0], logits_to_keep))

        loss_lm = loss_hc = loss_eac = logit_scale = None
        if labels is not None:
            loss_lm = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=num_items_in_batch,
            )
        want_hc = hc_labels is not None and self.config.hc_loss_weight > 0
        want_eac = entity_ids is not None and self.config.eac_loss_weight > 0
        if want_hc or want_eac:
            image_outputs = outputs.image_outputs
            if image_outputs is None:
                raise ValueError("hc_labels / entity_ids need the image inputs (pixel_values) in the same call")
            visual = torch.stack(list(image_outputs.pooler_output))  # [B, T, d]; one image per sample
        if want_hc:
            if self.hc_head is None:
                raise ValueError("hc_labels given but the config has no hierarchical labels (num_hierarchical_labels=0)")
            loss_hc = hierarchical_classification_loss(visual, hc_labels, self.hc_head)
        if self.eac_logit_scale is not None:
            logit_scale = self.eac_logit_scale()
        if want_eac:
            if entity_mask is None:
                raise ValueError("entity_ids given without entity_mask [B, M, L]")
            entity_mask = entity_mask.bool()
            loss_eac = entity_aware_contrastive_loss(
                image_outputs.hr_tokens,
                self.entity_embeddings(entity_ids, entity_mask),
                entity_mask.any(dim=-1),
                sigma=self.config.eac_sigma,
                logit_scale=logit_scale,
                negatives=self.config.eac_negatives,
                max_logit_scale=self.config.eac_max_logit_scale,
            )

        terms = [
            (self.config.lm_loss_weight, loss_lm),
            (self.config.hc_loss_weight, loss_hc),
            (self.config.eac_loss_weight, loss_eac),
        ]
        present = [weight * term for weight, term in terms if term is not None]
        loss = sum(present[1:], present[0]) if present else None

        return EecaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            loss_lm=loss_lm,
            loss_hc=loss_hc,
            loss_eac=loss_eac,
            logit_scale=logit_scale,
        )


def _register_llava_key_mapping() -> None:
    """Let llava-hf checkpoints (legacy `language_model.*` keys) load into the EECA classes.

    transformers skips its renaming registry for classes outside the library unless registered.
    """
    for source, target in (("llava", "eeca"), ("LlavaModel", "EecaModel")):
        register_checkpoint_conversion_mapping(target, get_checkpoint_conversion_mapping(source), overwrite=True)


_register_llava_key_mapping()

__all__ = [
    "EecaForConditionalGeneration",
    "EecaLogitScale",
    "EecaModel",
    "EecaPerceiverResampler",
    "EecaPreTrainedModel",
]
