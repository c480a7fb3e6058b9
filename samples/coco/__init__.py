"""The coco sample."""
