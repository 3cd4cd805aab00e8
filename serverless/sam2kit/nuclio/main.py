"""A CVAT interactor function (nuclio) on sam2kit: CVAT's SAM 2 request
`{"image": base64, "pos_points": [[x, y], ...], "neg_points": [...], "obj_bbox": [[x1, y1], [x2, y2]] | null}`
-> `{"mask": HxW 0/1}` (the best of three candidates, as CVAT's own SAM 2.0 function answers).

Settings (environment, set in function.yaml): SAM2KIT_MODEL (a hub id or a checkpoint path;
default facebook/sam2.1-hiera-tiny), SAM2KIT_DEVICE (default cpu), SAM2KIT_RESOLUTION
(default: the model's 1024). Bad requests answer 400 with {"error": ...}.
"""

import json
import os


def init_context(context):
    from sam2kit.image.predictor import SAM2ImagePredictor

    options = {"device": os.environ.get("SAM2KIT_DEVICE", "cpu")}
    if os.environ.get("SAM2KIT_RESOLUTION"):
        options["image_size"] = int(os.environ["SAM2KIT_RESOLUTION"])
    model = os.environ.get("SAM2KIT_MODEL", "facebook/sam2.1-hiera-tiny")
    context.user_data.predictor = SAM2ImagePredictor.from_pretrained(model, **options)
    context.logger.info(f"sam2kit interactor ready: {model}")


def _answer(context, status, body):
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status)


def handler(context, event):
    import torch

    from sam2kit.formats.cvat_protocol import decode_image, interact, interactor_prompt

    try:
        data = event.body if isinstance(event.body, dict) else json.loads(event.body)
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise ValueError('send {"image": base64, "pos_points": [[x, y], ...], "neg_points": [...]}')
        image = decode_image(data["image"], max_pixels=40_000_000)
        h, w = image.shape[:2]
        points, labels, box = interactor_prompt(data.get("pos_points"), data.get("neg_points"),
                                                data.get("obj_bbox"), w, h)
    except ValueError as e:  # (json.JSONDecodeError is one)
        return _answer(context, 400, {"error": str(e)})
    predictor = context.user_data.predictor
    with torch.inference_mode():
        predictor.set_image(image)
        mask = interact(predictor, points, labels, box)
    return _answer(context, 200, {"mask": mask.astype("uint8").tolist()})
