"""Pictures on the server: opened once (by content), prompted, segmented everything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import torch

from sam2kit.image.automatic import SAM2AutomaticMaskGenerator, coco_annotations
from sam2kit.image.io import ImageReadError, read_image
from sam2kit.image.predictor import SAM2ImagePredictor
from sam2kit.server.media import BadInput
from sam2kit.server.store import ImageEntry, ImageStore
from sam2kit.server.wire import check_box, check_inside, coco_rle, encode_jpeg, xywh


class Pictures:
    """The pictures' side of the service: the store and what the routes ask of it."""

    def __init__(self, service):
        self.service = service
        self.store = ImageStore(service.settings.max_images)

    async def open(self, path: Path, digest: str, owned: bool) -> tuple[ImageEntry, bool]:
        """The entry of the picture at ``path`` (content ``digest``), its embedding computed
        once; (entry, whether it was there already)."""
        image_id = digest[:24]
        entry = self.store.find(image_id)
        if entry is not None:
            if owned:
                path.unlink(missing_ok=True)
            if entry.ready is not None:
                await asyncio.shield(entry.ready)
            return self.store.get(image_id), True
        try:
            array = read_image(path, self.service.settings.max_pixels, name="the upload" if owned else path.name)
        except ImageReadError as e:
            if owned:
                path.unlink(missing_ok=True)
            raise BadInput(415 if "not an image format" in str(e) else 422, str(e)) from None
        h, w = array.shape[:2]
        entry = ImageEntry(image_id, path, owned, w, h, ready=asyncio.get_running_loop().create_future())
        self.store.add(entry)
        try:
            entry.embedding = await self.service.executor.run(self._embed, array, lane="interactive")
        except BaseException as e:
            self.store.remove(image_id, "its embedding failed")
            entry.ready.set_exception(e)
            entry.ready.exception()  # (retrieved: no "never retrieved" warning)
            raise
        entry.ready.set_result(None)
        entry.ready = None
        return entry, False

    def _embed(self, array: np.ndarray):
        with torch.inference_mode():
            predictor = SAM2ImagePredictor(self.service.model)
            predictor.set_image(array)
            return predictor.embedding

    async def predict(self, image_id: str, req) -> dict:
        entry = await self._ready(image_id)
        mask_input = None
        if req.mask_input is not None:
            mask_input = entry.logits.get(req.mask_input)
            if mask_input is None:
                raise BadInput(404, f"no logits {req.mask_input!r} for this picture (each picture keeps its "
                                    "last 64); send the clicks again without mask_input")
        for x, y in req.points:
            check_inside(x, y, entry.width, entry.height, "point")
        if req.box is not None:
            check_box(req.box, entry.width, entry.height)
        masks, scores, logits = await self.service.executor.run(self._predict, entry, req, mask_input)
        out = []
        for m, score, lg in zip(masks, scores, logits):
            m = m.astype(bool)
            out.append({"rle": coco_rle(m), "score": float(score), "area": int(m.sum()), "bbox": xywh(m),
                        "logits_id": entry.keep_logits(lg[None])})
        best = int(np.argmax(scores))
        return {"masks": out, "best": best, "logits_id": out[best]["logits_id"]}

    async def masks(self, image_id: str, req) -> tuple[np.ndarray, np.ndarray]:
        """([K, H, W] bool masks, [K] scores) of a PredictRequest without mask_input, for front ends
        that send masks in their own format (Label Studio)."""
        entry = await self._ready(image_id)
        for x, y in req.points:
            check_inside(x, y, entry.width, entry.height, "point")
        if req.box is not None:
            check_box(req.box, entry.width, entry.height)
        masks, scores, _ = await self.service.executor.run(self._predict, entry, req, None)
        return masks.astype(bool), scores

    def _predict(self, entry: ImageEntry, req, mask_input):
        predictor = SAM2ImagePredictor(self.service.model)
        predictor.set_embedding(entry.embedding)
        points = np.array(req.points, dtype=np.float32) if req.points else None
        labels = np.array(req.labels, dtype=np.int32) if req.points else None
        box = np.array(req.box, dtype=np.float32) if req.box is not None else None
        return predictor.predict(points, labels, box, mask_input, multimask_output=req.multimask)

    async def jpeg(self, image_id: str, quality: int) -> bytes:
        entry = self.store.get(image_id)
        return await asyncio.to_thread(_picture_jpeg, entry.path, self.service.settings.max_pixels, quality)

    async def _ready(self, image_id: str) -> ImageEntry:
        """The picture's entry once its embedding is there (another request may be making it)."""
        entry = self.store.get(image_id)
        if entry.ready is not None:
            await asyncio.shield(entry.ready)
        return entry

    async def automatic(self, image_id: str, req) -> dict:
        entry = await self._ready(image_id)
        records = await self.service.executor.run(self._automatic, entry, req.model_dump(), lane="bulk")
        return {"images": [{"id": 1, "width": entry.width, "height": entry.height}],
                "categories": [{"id": 1, "name": "object"}],
                "annotations": coco_annotations(records, image_id=1)}

    async def automatic_records(self, image_id: str, req) -> list[dict]:
        """The generator's records of every mask, masks as [H, W] bool (``segmentation``)."""
        entry = await self._ready(image_id)
        return await self.service.executor.run(self._automatic, entry, req.model_dump(), "binary_mask", lane="bulk")

    def _automatic(self, entry: ImageEntry, params: dict, output_mode: str = "uncompressed_rle"):
        array = read_image(entry.path, self.service.settings.max_pixels)
        generator = SAM2AutomaticMaskGenerator(self.service.model, output_mode=output_mode, **params)
        with torch.inference_mode():
            return generator.generate(array)


def _picture_jpeg(path: Path, max_pixels: int, quality: int) -> bytes:
    try:
        return encode_jpeg(read_image(path, max_pixels), quality)
    except ImageReadError as e:  # (the file went away under the media root)
        raise BadInput(410, str(e)) from None
