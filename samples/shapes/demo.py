"""The demo: train Mask R-CNN from scratch on generated shapes, report mAP@0.5, draw detections.

Runs on a 2-core CPU in 9 to 13 minutes (mAP@0.5 about 0.97), downloads nothing:

    python samples/shapes/demo.py                 # train, evaluate, write PNGs to ./demo_output
    python samples/shapes/demo.py --epochs 2 --out /tmp/demo
    KERAS_BACKEND=jax python samples/shapes/demo.py   # the same on Keras' JAX backend

It follows Matterport's train_shapes notebook (ShapesConfig, ShapesDataset, train,
then detect in inference mode) with a smaller network so that training from scratch
converges quickly on a CPU: a small conv backbone through Matterport's callable-BACKBONE hook
(``mrcnn.modeling.compact``), narrower FPN, RPN, classifier and mask head, fewer ROIs; the graph
after the backbone is Matterport's. Adam at 1e-3, the last fifth of the epochs at 1e-4.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# TensorFlow's C++ warnings (grappler cost estimates for CropAndResize, ...) would bury the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mrcnn.modeling.compact import CompactModel  # noqa: E402
from samples.common import checkpoint_keep, lr_drop_schedule  # noqa: E402
from samples.shapes.shapes import ShapesConfig, make_datasets  # noqa: E402


class DemoConfig(CompactModel, ShapesConfig):
    """ShapesConfig with the compact model (:class:`mrcnn.modeling.compact.CompactModel`)."""
    NAME = "shapes_demo"
    IMAGES_PER_GPU = 4
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    # 7x7 ROIs and 14x14 masks: shapes' outlines are simple and the step is cheaper.
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 10
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5
    LEARNING_RATE = 0.001


class DemoInferenceConfig(DemoConfig):
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    # AP integrates over the score-ranked list; low-score detections can only add recall.
    DETECTION_MIN_CONFIDENCE = 0.3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="folder for the PNGs of detections (default: %(default)s)")
    parser.add_argument("--logs", default="logs", help="folder for checkpoints and TensorBoard logs")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DemoConfig.STEPS_PER_EPOCH, help="steps per epoch")
    parser.add_argument("--train-images", type=int, default=1000, help="generated training images")
    parser.add_argument("--val-images", type=int, default=50, help="held-out images for mAP")
    parser.add_argument("--pictures", type=int, default=8, help="how many detection PNGs to write")
    parser.add_argument("--lr", type=float, default=DemoConfig.LEARNING_RATE, help="learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the input order")
    parser.add_argument("--keep", type=int, default=3,
                        help="checkpoints kept: the N newest plus the best validation loss "
                             "(default: %(default)s; 0 keeps all 40, about 270 MB)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="adam (default; converges fast from scratch) or sgd (Matterport's SGD + momentum)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import mrcnn.model as modellib
    from mrcnn import visualize
    from mrcnn.evaluation.voc import evaluate_model

    import keras
    keras.utils.set_random_seed(args.seed)  # weight init and ROI sampling: repeatable runs
    start = time.time()
    train_ds, val_ds = make_datasets(args.train_images, args.val_images, size=128, seed=args.seed)

    config = DemoConfig()
    config.STEPS_PER_EPOCH = args.steps
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    print(f"Training from scratch for {args.epochs} epochs x {args.steps} steps "
          f"(batch {config.BATCH_SIZE}, {args.train_images} images)")
    optimizer = None  # train() then builds Matterport's SGD
    if args.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=args.lr, global_clipnorm=config.GRADIENT_CLIP_NORM)
    # The last fifth of the epochs at a tenth of the rate settles the boxes and masks.
    schedule = lr_drop_schedule(args.lr, 0, args.epochs, 0.8)
    callbacks = [keras.callbacks.LearningRateScheduler(schedule)] if schedule is not None else []
    model.train(train_ds, val_ds, learning_rate=args.lr, epochs=args.epochs, layers="all", seed=args.seed,
                optimizer=optimizer, custom_callbacks=callbacks, keep=checkpoint_keep(args))
    checkpoint = model.find_last()
    train_time = time.time() - start

    infer = modellib.MaskRCNN(mode="inference", config=DemoInferenceConfig(), model_dir=args.logs)
    infer.load_weights(checkpoint, by_name=True)
    result = evaluate_model(infer, val_ds, infer.config, iou_thresholds=[0.5, 0.75])
    print(result.summary(val_ds.class_names))

    os.makedirs(args.out, exist_ok=True)
    for image_id in val_ds.image_ids[:args.pictures]:
        image = val_ds.load_image(image_id)
        r = infer.detect([image])[0]
        path = os.path.join(args.out, f"shapes_{image_id:03d}.png")
        visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"], val_ds.class_names,
                                    r["scores"], title=f"image {image_id}", figsize=(6, 6), save_path=path)
    total = time.time() - start
    print(f"\nmAP@0.5 on {len(val_ds.image_ids)} held-out images: {result.mAP:.3f}")
    print(f"Training took {train_time / 60:.1f} min, everything {total / 60:.1f} min")
    print(f"Checkpoint: {checkpoint}")
    print(f"Pictures of detections: {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
