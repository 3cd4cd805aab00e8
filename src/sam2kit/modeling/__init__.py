"""The SAM 2 model as nn modules, one file a part of the architecture diagram: the Hiera trunk
and FPN neck (``hiera``, ``image_encoder``), the prompt encoder and mask decoder
(``prompt_encoder``, ``mask_decoder``, ``transformer``), memory attention and the memory encoder
(``memory_attention``, ``memory_encoder``), positional encodings, and the model (``sam2``).
Module names equal checkpoint keys, so loading is a strict ``load_state_dict``."""
