"""Configuration of the synthetic world and its stand-in models (``configs/synth/world.yaml``).

Frozen dataclasses loaded with :func:`eeca.config.load_config`; see :mod:`eeca.synth.world` and
:mod:`eeca.synth.models` for what each field drives (DESIGN section 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorldConfig:
    """Size and randomness of the synthetic world."""

    landmarks: int = 200
    image_size: int = 128  # square JPEGs; twice the stand-in CLIP's 64 px so a 2x2 HR grid has detail
    images_median: float = 12.0  # lognormal long tail of images per landmark (GLDv2-like)
    images_sigma: float = 1.0
    images_min: int = 2
    images_max: int = 120
    ambiguous_fraction: float = 0.08  # views that show little of the landmark (crop, fog, dark)
    occlusion_fraction: float = 0.2
    clip_seen_fraction: float = 0.6  # landmarks the stand-in CLIP trains on (VE-Known by construction)
    clip_heldout_fraction: float = 0.2  # of a seen landmark's images, kept out of CLIP training
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.landmarks < 2:
            raise ValueError(f"landmarks must be >= 2, got {self.landmarks}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 2 <= self.images_min <= self.images_max:
            raise ValueError(f"need 2 <= images_min <= images_max (a seen landmark keeps one image out of CLIP "
                             f"training), got {self.images_min}, {self.images_max}")
        for name in ("ambiguous_fraction", "occlusion_fraction", "clip_seen_fraction", "clip_heldout_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 2048


@dataclass(frozen=True)
class ClipTrainConfig:
    """The stand-in CLIP: a tiny ``CLIPModel`` trained contrastively on image-name pairs."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    max_text_length: int = 24
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("need steps >= 1 and batch_size >= 2 (contrastive negatives)")


@dataclass(frozen=True)
class LlmTrainConfig:
    """The stand-in LLM: a tiny ``LlamaForCausalLM`` trained on every landmark's text, both directions."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 256
    max_length: int = 96
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("need steps >= 1 and batch_size >= 1")


@dataclass(frozen=True)
class SynthConfig:
    """The world and the stand-ins trained on it, with one seed for model training."""

    world: WorldConfig = field(default_factory=WorldConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    clip: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    llm: LlmTrainConfig = field(default_factory=LlmTrainConfig)
    seed: int = 0
    # 2 threads train 1.4x faster than 1 on a 2-core machine of your own (measured); on an oversubscribed
    # machine two OpenMP threads stall each other (measured 20-40x slower): set 1 there
    threads: int = 2
