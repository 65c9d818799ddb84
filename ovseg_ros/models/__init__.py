"""The networks and their weights: open_clip's CLIP ViT walked block by block (clip_vit),
OVSeg's mask-prompt and MaskCLIP's mask-token forwards (mask_forwards), SAM's prompt decoder
for the fast path (sam_decoder), checkpoints fetched with a SHA-256 check and read without
running code (checkpoints, sam_weights, clip_weights, weights) and the precision setting
(precision). May import only settings.
"""
