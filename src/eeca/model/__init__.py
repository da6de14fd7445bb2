"""The EECA model (paper 4.2, App. A): dual-branch LLaVA with a Perceiver resampler, L_EAC and L_HC.

Importing this package registers `EecaConfig`, `EecaModel`, `EecaForConditionalGeneration` and
`EecaProcessor` with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText`, `AutoProcessor`) under model_type "eeca", and marks them for the Auto
classes' remote code: `save_pretrained` copies configuration_eeca.py, modeling_eeca.py, losses.py and
processing_eeca.py beside the weights and writes `auto_map` into config.json and processor_config.json,
so `AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)` and `AutoProcessor`
load a checkpoint in a Python without eeca (those files import only each other, relatively).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from eeca.model.configuration_eeca import EecaConfig
from eeca.model.modeling_eeca import EecaForConditionalGeneration, EecaModel
from eeca.model.processing_eeca import EecaProcessor

AutoConfig.register("eeca", EecaConfig, exist_ok=True)
AutoModel.register(EecaConfig, EecaModel, exist_ok=True)
AutoModelForImageTextToText.register(EecaConfig, EecaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(EecaConfig, EecaProcessor, exist_ok=True)
EecaConfig.register_for_auto_class()
EecaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
EecaProcessor.register_for_auto_class()

__all__ = ["EecaConfig", "EecaForConditionalGeneration", "EecaModel", "EecaProcessor"]
