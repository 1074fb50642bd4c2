"""Video encoder: sparse tubes in front of a timm VisionTransformer, one pass per clip.

State-dict layout (the checkpoint importer relies on it):

- ``trunk.*``: a ``timm`` VisionTransformer (``num_classes=0, global_pool=''``) with its own names.
  The image tube IS ``trunk.patch_embed.proj``; the 2D position table IS ``trunk.pos_embed``.
- ``tubes.{name}.weight/bias``: the other tubes, Conv3d weights (D, 3, kt, kh, kw), inflated
  from the image kernel at construction.
- ``proj``: (vision_width, embed_dim).
- ``time_embed``: (num_frames, vision_width), the learned temporal position table, zero at
  initialisation (TimeSformer's choice): a video's tokens then carry exactly the image model's
  positions, and fine-tuning learns time. A token takes the table linearly sampled at its tube's
  centre frame (row ``frame`` when the clip has ``num_frames`` frames). Images (T = 1) skip it.

Head (openMaMMUT, ``pool_type="avg_all"``, ``final_ln_after_pool=True``): the visual tokens are ALL
tokens incl. CLS after the blocks and BEFORE the final LayerNorm; the embedding is the mean over
them, then ``ln_post``, then ``proj``. Decision: ``ln_post`` is ``trunk.norm`` (timm already maps
open_clip's ``ln_post`` to ``norm`` when converting CLIP towers), so there is no separate module
and ``visual.ln_post`` is an alias property, not a state-dict entry.

Not supported (raise at construction): timm ViTs with register tokens, without a class token or
without a learned absolute position table.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from mammut_video.errors import ConfigError
from mammut_video.model.config import IMAGE_TUBE, TubeSpec, VisionConfig
from mammut_video.model.tubes import active_tubes, bilinear_matrix, inflate_kernel, linear_matrix, tube_centres


def create_trunk(cfg: VisionConfig) -> nn.Module:
    """Build the timm ViT body with random weights (tokens out, no head)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(cfg.timm_kwargs)
    kwargs.setdefault("img_size", cfg.image_size)
    trunk = timm.create_model(cfg.timm_model, pretrained=False, num_classes=0, global_pool="", **kwargs)
    if not isinstance(trunk, VisionTransformer):
        raise ConfigError(f"timm model {cfg.timm_model!r} is not a VisionTransformer")
    if trunk.embed_dim != cfg.width or trunk.patch_embed.patch_size != (cfg.patch_size, cfg.patch_size):
        raise ConfigError(
            f"timm model {cfg.timm_model!r} has width {trunk.embed_dim}, patch {trunk.patch_embed.patch_size}; "
            f"config says width {cfg.width}, patch {cfg.patch_size}")
    if trunk.cls_token is None or trunk.reg_token is not None or trunk.pos_embed is None:
        raise ConfigError(f"timm model {cfg.timm_model!r}: tubes need a class token, no register tokens and a "
                         "learned absolute position table")
    return trunk


class VideoEncoder(nn.Module):
    """(B, C, T, H, W) float clip (or (B, C, H, W) images) -> visual tokens (B, 1 + N, D) and embedding (B, E).

    ``num_frames``: rows of the temporal position table (the model's clip length).
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, num_frames: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = create_trunk(cfg)
        proj = self.trunk.patch_embed.proj
        self.tube_specs: list[TubeSpec] = list(cfg.tubes)
        self.tubes = nn.ModuleDict()
        for spec in self.tube_specs:
            if spec.name == IMAGE_TUBE:
                continue
            conv = nn.Conv3d(proj.in_channels, proj.out_channels, spec.kernel, spec.stride, bias=proj.bias is not None)
            self.tubes[spec.name] = conv
        self.proj = nn.Parameter(torch.randn(cfg.width, embed_dim) * cfg.width ** -0.5)
        self.time_embed = nn.Parameter(torch.zeros(num_frames, cfg.width))
        self.inflate_tubes()
        self._pos_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def ln_post(self) -> nn.Module:
        """The final LayerNorm (openMaMMUT's ``visual.ln_post``) is ``trunk.norm``."""
        return self.trunk.norm

    @property
    def width(self) -> int:
        return self.cfg.width

    @torch.no_grad()
    def inflate_tubes(self) -> None:
        """(Re)initialise every non-image tube from the image kernel (call after loading a 2D ViT)."""
        proj = self.trunk.patch_embed.proj
        for spec in self.tube_specs:
            if spec.name == IMAGE_TUBE:
                continue
            conv = self.tubes[spec.name]
            conv.weight.copy_(inflate_kernel(proj.weight, spec.kernel))
            if conv.bias is not None:
                conv.bias.copy_(proj.bias)

    def _positions(self, t: int, h: int, w: int, device: torch.device, dtype: torch.dtype):
        """Sampling weights for a (t, h, w) input: spatial (N, Gh*Gw) over the 2D table and temporal
        (N, num_frames) over ``time_embed`` (None for an image)."""
        key = (t, h, w, device, dtype)
        if key not in self._pos_cache:
            centres = torch.cat([tube_centres(s, t, h, w) for s in active_tubes(self.tube_specs, t, h, w)])
            grid = self.trunk.patch_embed.grid_size
            spatial = bilinear_matrix(centres[:, 1:], grid, (h, w)).to(device, dtype)
            frames = self.time_embed.shape[0]
            temporal = linear_matrix(centres[:, 0], frames, t).to(device, dtype) if t > 1 else None
            self._pos_cache[key] = (spatial, temporal)
        return self._pos_cache[key]

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Tube tokens before positions: (B, C, T, H, W) -> (B, N, D), tubes in config order."""
        b, _, t, h, w = x.shape
        out = []
        for spec in active_tubes(self.tube_specs, t, h, w):
            (ot, oh, ow), (nt, nh, nw) = spec.offset, spec.grid(t, h, w)
            if spec.name == IMAGE_TUBE:
                frames = x[:, :, ot::spec.stride[0]][:, :, :nt]  # (B, C, nt, H, W)
                frames = rearrange(frames, "b c t h w -> (b t) c h w")[:, :, oh:, ow:]
                y = self.trunk.patch_embed.proj(frames)[:, :, :nh, :nw]
                y = rearrange(y, "(b t) d h w -> b (t h w) d", b=b)
            else:
                y = self.tubes[spec.name](x[:, :, ot:, oh:, ow:])[:, :, :nt, :nh, :nw]
                y = rearrange(y, "b d t h w -> b (t h w) d")
            out.append(y)
        tokens = torch.cat(out, dim=1)
        return self.trunk.patch_embed.norm(tokens)

    def add_positions(self, tokens: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        """Tube tokens (B, N, D) -> (B, 1 + N, D) with CLS prepended and positions added."""
        trunk = self.trunk
        spatial, temporal = self._positions(t, h, w, tokens.device, tokens.dtype)
        table = trunk.pos_embed[0]
        if trunk.no_embed_class:
            cls_pos, grid_pos = None, table
        else:
            cls_pos, grid_pos = table[:1], table[1:]
        pos = spatial @ grid_pos
        if temporal is not None:
            pos = pos + temporal @ self.time_embed
        tokens = tokens + pos
        cls = trunk.cls_token.expand(tokens.shape[0], -1, -1)
        if cls_pos is not None:
            cls = cls + cls_pos
        return trunk.pos_drop(torch.cat([cls, tokens], dim=1))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> visual tokens (B, 1 + N, D) after the blocks, before ``ln_post``.

        An image batch (B, C, H, W) is taken as clips of one frame (T = 1): exactly the pretrained ViT.
        """
        x = self.checked_input(x)
        _, _, t, h, w = x.shape
        tokens = self.add_positions(self.tokenize(x), t, h, w)
        tokens = self.trunk.patch_drop(tokens)
        tokens = self.trunk.norm_pre(tokens)
        if self.trunk.grad_checkpointing and torch.is_grad_enabled():
            from timm.models import checkpoint_seq

            return checkpoint_seq(self.trunk.blocks, tokens)
        return self.trunk.blocks(tokens)

    def checked_input(self, x: object) -> torch.Tensor:
        """``x`` as a float (B, C, T, H, W) batch in the weights' dtype; a :class:`ConfigError` saying what is
        wrong for the usual mistakes (a clip without its batch dimension, frames not through ``preprocess``)."""
        hint = "clips go through model.preprocess (uint8 (T, H, W, C) -> float (C, T, H, W)), then [None] or stack"
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"expected a float tensor (B, C, T, H, W), got {type(x).__name__}; {hint}")
        if not x.is_floating_point():
            raise ConfigError(f"expected a float tensor (B, C, T, H, W), got {x.dtype} {tuple(x.shape)}; {hint}")
        given = tuple(x.shape)
        if x.ndim == 4:
            x = x[:, :, None]
        channels = self.trunk.patch_embed.proj.in_channels
        if x.ndim != 5 or x.shape[1] != channels:
            raise ConfigError(f"expected a clip batch (B, {channels}, T, H, W) or images (B, {channels}, H, W), got "
                              f"shape {given}; one preprocessed clip is (C, T, H, W): pass clip[None]")
        if x.shape[0] == 0:
            raise ConfigError("an empty batch of clips")
        if not active_tubes(self.tube_specs, *x.shape[2:]):
            raise ConfigError(f"frames of {x.shape[3]}x{x.shape[4]} are smaller than one patch of this model; "
                              f"{hint}")
        dtype = self.proj.dtype
        if x.dtype == dtype or (x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)):
            return x
        return x.to(dtype)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Visual tokens (B, N, D) -> embedding (B, E): mean over all tokens incl. CLS, ln_post, proj."""
        return self.ln_post(tokens.mean(dim=1)) @ self.proj

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> (tokens (B, 1 + N, D), embedding (B, E))."""
        tokens = self.forward_tokens(x)
        return tokens, self.pool(tokens)

    def forward_per_frame(self, x: torch.Tensor) -> torch.Tensor:
        """Baseline: every frame separately through the image ViT. (B, C, T, H, W) -> (B, T * (1 + HW/P^2), D)."""
        feats = self.trunk.forward_features(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(feats, "(b t) n d -> b (t n) d", b=x.shape[0])
