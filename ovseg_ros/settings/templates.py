"""Prompt template sets: each class name becomes one prompt per template, and the class's
text embedding is the average of theirs (``ovseg_ros.segmentation.vocabulary.TextEmbedder``).

``TEMPLATE_SETS`` is the one list of sets the ``templates`` setting may name. It imports no
torch, so ``ovseg_ros.settings.config`` can offer its names as the setting's choices.
"""

from __future__ import annotations

from collections.abc import Callable

# OVSeg's 14 "ViLD" templates (open_vocab_seg/modeling/clip_adapter/text_template.py).
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
SINGLE_TEMPLATE = ("a photo of a {}.",)


def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet templates, from open_clip (imported only when they are asked for)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


# templates setting -> the templates it names, each with "{}" where the class name goes.
TEMPLATE_SETS: dict[str, Callable[[], tuple[str, ...]]] = {
    "single": lambda: SINGLE_TEMPLATE,
    "vild": lambda: VILD_TEMPLATES,
    "imagenet": imagenet_templates,
}
