"""A tiny random Stable Diffusion pipeline built from configs: no download, a few hundred k parameters.

The weights are random, so images are noise; what the tests check is the real code path (tokenizer, text encoder,
UNet denoising loop, VAE decode, PNG writing), seeding, batching and file handling.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TEXT_DIM = 32  # text encoder width = UNet cross-attention width
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def byte_level_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP-style byte-level BPE vocab: every byte as a symbol, alone and word-final (`</w>`), no merges.

    Bytes map to printable unicode exactly as GPT-2/CLIP's `bytes_to_unicode` does, so any text tokenizes.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    tokens = [*symbols, *(s + "</w>" for s in symbols), *SPECIAL_TOKENS]
    return {token: i for i, token in enumerate(tokens)}, []


def tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """UNet, VAE and CLIP text model small enough to denoise 64x64 images in a fraction of a second on CPU."""
    torch.manual_seed(seed)
    vocab, merges = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab[SPECIAL_TOKENS[0]],
            eos_token_id=vocab[SPECIAL_TOKENS[1]],
            pad_token_id=vocab[SPECIAL_TOKENS[1]],
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
