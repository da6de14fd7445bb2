"""`EecaConfig`: a `LlavaConfig` plus the EECA switches of paper section 4.2 and App. A.

Every ablation of the paper's Table 3 is a field here: the HR branch on/off and each loss weight
(l1 L_LM + l2 L_HC + l3 L_EAC), and every choice the paper leaves open and DESIGN section 6 infers
(the L_EAC negatives, the sparsification threshold sigma, the stop-gradient on entity embeddings).
Bad values are rejected when the config is built, naming the field.
"""

from transformers import LlavaConfig

EAC_NEGATIVES = ("image", "batch")
HR_PROJECTORS = ("mlp", "linear")


class EecaConfig(LlavaConfig):
    """LLaVA config with EECA's high-resolution branch and auxiliary-loss settings.

    Args (beyond `LlavaConfig`'s):
        use_hr_branch: run the HR branch (G x G crops + the LR image -> Perceiver resampler) and put its
            `num_hr_latents` tokens before the LR tokens. Off: the model is HF Llava.
        hr_grid: G, the HR image is G * image_size pixels square, cut into G x G crops (paper: 2).
        num_hr_latents: P, learned resampler queries = HR visual tokens per image (paper: 128).
        resampler_depth / resampler_heads / resampler_head_dim / resampler_ff_mult: Perceiver resampler
            geometry (pre-LayerNorm attention + FFN blocks, final LayerNorm).
        hr_projector: what maps the resampler's latents (vision width) to the LLM width. "mlp" (the
            toolkit's addition: a 2-layer GELU MLP of the LR projector's shape) or "linear" (one linear
            map, the least a width change needs; the paper names no module there).
        sub_image_embeddings: add a learned embedding per sub-image (LR image, each crop) to its features
            before the resampler (the toolkit's addition, so the resampler knows which crop a feature
            comes from; the paper does not say). False: no such parameter.
        lm_loss_weight / hc_loss_weight / eac_loss_weight: l1, l2, l3 of the total loss (default 1, 1, 1: the
            paper's values were lost in its text, App. A "We set the value of and , respectively").
        hierarchical_labels: the L_HC label vocabulary (names, saved with the model); index = class id;
            None = no L_HC head. `num_hierarchical_labels` is its length.
        eac_negatives: "image" (contrast the entities of one image, as SPARC) or "batch" (every entity in
            the batch, as SEA).
        eac_sigma: sparsification threshold on min-max normalised similarities; None = 1 / P.
        entity_stop_gradient: detach the entity embeddings e_ij (mean input-embedding rows).
        eac_logit_scale_init: t at init, 1 / tau = exp(t) (paper: "temperature, initialized at zero").
        eac_max_logit_scale: clamp of 1 / tau (CLIP's 100).
    """

    model_type = "eeca"

    use_hr_branch: bool = True
    hr_grid: int = 2
    num_hr_latents: int = 128
    resampler_depth: int = 1
    resampler_heads: int = 16
    resampler_head_dim: int = 64
    resampler_ff_mult: int = 4
    hr_projector: str = "mlp"
    sub_image_embeddings: bool = True
    lm_loss_weight: float = 1.0
    hc_loss_weight: float = 1.0
    eac_loss_weight: float = 1.0
    hierarchical_labels: list[str] | None = None
    eac_negatives: str = "image"
    eac_sigma: float | None = None
    entity_stop_gradient: bool = True
    eac_logit_scale_init: float = 0.0
    eac_max_logit_scale: float = 100.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # a llava-hf config.json read into this class carries model_type "llava"; saved again it must say "eeca"
        self.__dict__.pop("model_type", None)
        self.validate_eeca()

    def validate_eeca(self) -> None:
        """Reject bad EECA values, naming the field (also run by the model: `from_pretrained(**kwargs)`
        sets attributes after construction)."""
        if self.hierarchical_labels is not None:
            labels = list(self.hierarchical_labels)
            if len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
                raise ValueError(f"EecaConfig.hierarchical_labels must be distinct non-empty names (duplicates?): {labels}")
            self.hierarchical_labels = labels
        for name in ("hr_grid", "num_hr_latents", "resampler_depth", "resampler_heads", "resampler_head_dim",
                     "resampler_ff_mult"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EecaConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lm_loss_weight", "hc_loss_weight", "eac_loss_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"EecaConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.hr_projector not in HR_PROJECTORS:
            raise ValueError(f"EecaConfig.hr_projector must be one of {HR_PROJECTORS}, got {self.hr_projector!r}")
        if self.eac_negatives not in EAC_NEGATIVES:
            raise ValueError(f"EecaConfig.eac_negatives must be one of {EAC_NEGATIVES}, got {self.eac_negatives!r}")
        if self.eac_sigma is not None and not 0.0 <= float(self.eac_sigma) < 1.0:
            # min-max normalised scores lie in [0, 1]; sigma >= 1 would zero every weight
            raise ValueError(f"EecaConfig.eac_sigma must be in [0, 1) or None, got {self.eac_sigma}")
        if not float(self.eac_max_logit_scale) > 0:
            raise ValueError(f"EecaConfig.eac_max_logit_scale must be > 0, got {self.eac_max_logit_scale}")
        if self.eac_loss_weight > 0 and not self.use_hr_branch:
            raise ValueError(
                "EecaConfig.eac_loss_weight > 0 needs use_hr_branch=True (L_EAC is defined on the HR tokens); "
                "set eac_loss_weight=0 for an HR-off model"
            )
        if not isinstance(self.vision_feature_layer, int) and self.use_hr_branch:
            raise ValueError("EecaConfig.vision_feature_layer must be one int when use_hr_branch=True")

    @property
    def num_hierarchical_labels(self) -> int:
        """Size of the L_HC label vocabulary; 0 = no L_HC head."""
        return len(self.hierarchical_labels or [])

    @property
    def num_visual_tokens(self) -> int:
        """Placeholder tokens per image: P HR latents (HR branch on) + (image_size / patch_size)^2 LR tokens."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        num_lr = side * side + (0 if self.vision_feature_select_strategy == "default" else 1)
        return (self.num_hr_latents if self.use_hr_branch else 0) + num_lr


EECA_FIELDS = tuple(
    name for name in EecaConfig.__annotations__ if name not in LlavaConfig.__annotations__
)  # the fields a model YAML may set

__all__ = ["EECA_FIELDS", "EecaConfig"]
