"""The EECA model (paper 4.2, App. A): dual-branch LLaVA with a Perceiver resampler, L_EAC and L_HC.

Importing this package registers `EecaConfig`, `EecaModel`, `EecaForConditionalGeneration` and
`EecaProcessor` with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText`, `AutoProcessor`) under model_type "eeca".
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from eeca.model.configuration_eeca import EecaConfig
from eeca.model.modeling_eeca import EecaForConditionalGeneration, EecaModel
from eeca.model.processing_eeca import EecaProcessor

AutoConfig.register("eeca", EecaConfig, exist_ok=True)
AutoModel.register(EecaConfig, EecaModel, exist_ok=True)
AutoModelForImageTextToText.register(EecaConfig, EecaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(EecaConfig, EecaProcessor, exist_ok=True)

__all__ = ["EecaConfig", "EecaForConditionalGeneration", "EecaModel", "EecaProcessor"]
