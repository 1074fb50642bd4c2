"""Per-channel pixel statistics that models normalise with (RGB, for values in [0, 1]).

The same values as ``timm.data.constants`` (OPENAI_CLIP_MEAN/STD, IMAGENET_DEFAULT_MEAN/STD),
written out so that importing them loads neither timm nor torchvision.
"""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
