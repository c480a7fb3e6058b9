"""mrcnn: Mask R-CNN for Keras 3 / TensorFlow 2, API-compatible with Matterport's package.

Public modules keep Matterport's names: ``mrcnn.config``, ``mrcnn.utils``,
``mrcnn.model`` and ``mrcnn.visualize``. The implementation lives in the
subpackages ``core`` (numpy box/mask/image maths), ``data`` (datasets, targets,
input pipelines, format loaders), ``modeling`` (Keras layers and the model),
``engine`` (training), ``evaluation`` and ``io``.
"""
__version__ = "3.0.0.dev0"
