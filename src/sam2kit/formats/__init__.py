"""Export formats annotation tools and training pipelines read: polygons from masks
(`polygons`), COCO with polygons or RLE (`coco`), YOLO segmentation (`yolo`), CVAT XML and CVAT's
mask RLE (`cvat`), Label Studio pre-annotations (`labelstudio`).

Conventions shared by every format here: masks are [H, W] bool/uint8 arrays (nonzero = object);
polygon coordinates are pixels of the original picture in *pixel-edge* coordinates (pixel (x, y)
covers the square [x, x+1] x [y, y+1], COCO's convention), x to the right, y down.
Optional dependencies are imported on first use and name the extra to install.
Entry point: `formats.write.write_formats`.
"""
