"""Training data: identity folders, InsightFace RecordIO, synthetic faces, samplers, transforms.

Every dataset yields ``(image, label, index)`` where ``image`` went through
:func:`training.data.transforms.to_tensor` -- the one place where the on-disk BGR
crop becomes the RGB, (x - 127.5) / 127.5, CHW float tensor the models see.
"""
