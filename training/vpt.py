"""ZegCLIP's deep visual-prompt-tuned CLIP ViT (``VPTCLIPVisionTransformer``), with CLIP-RC's
optional region tokens.

Token order: CLS, ``num_tokens`` prompts, h*w patches[, 16 region tokens]. Shallow prompts are
inserted after ``ln_pre``; before blocks 1..total_d_layer the prompt slots are replaced by the
deep prompts. Every prompt goes through the shared ``prompt_proj`` and dropout 0.1. The final
hidden states pass ``prompt_norm`` (LayerNorm eps 1e-6) and then ``ln_post`` and ``proj``.

State-dict names equal the official ``backbone.*`` keys (``conv1``, ``class_embedding``,
``positional_embedding`` [1+32*32, W] at 512 px, ``ln_pre``, ``transformer.resblocks.N.*``,
``ln_post``, ``proj``, ``prompt_embeddings``, ``deep_prompt_embeddings``, ``prompt_proj``,
``prompt_norm``[, ``region_level_bridge``]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ConfigError

REGION_SIDE = 4  # CLIP-RC: 4x4 region tokens
MASK_VALUE = -1e4  # additive "cannot attend" value: finite, so FP16 stays safe (METHODS A3)


class QuickGELU(nn.Module):
    """CLIP's x * sigmoid(1.702 x); the official ZegCLIP blocks use it whatever open_clip built."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def attention(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Explicit multi-head self-attention with the block's ``nn.MultiheadAttention`` weights.

    Written out (matmul/softmax) so export never meets the fused fast path.
    x [B,N,W]; mask additive [N,N] or None -> [B,N,W].
    """
    attn = block.attn
    bsz, n, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(bsz, n, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q * (width // heads) ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(bsz, n, width)
    return attn.out_proj(out)


def block_forward(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Pre-norm CLIP block: x + attn(ln_1 x); x + mlp(ln_2 x).

    The official blocks build DropPath(0.1) but never call it, so there is none here.
    """
    x = x + block.ls_1(attention(block, block.ln_1(x), mask))  # ls_* are Identity for CLIP
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1+g*g, W] -> [1+gh*gw, W]; bilinear (align_corners=False) as the official loader; CLS
    row kept."""
    g = int(round(math.sqrt(pos.shape[0] - 1)))
    if (g, g) == tuple(grid):
        return pos
    spatial = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], spatial.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def region_mask(grid: int, num_prompts: int, side: int = REGION_SIDE) -> torch.Tensor:
    """CLIP-RC's fixed additive attention mask [N,N] (0 = may attend, MASK_VALUE = may not).

    Tokens: CLS, prompts, grid*grid patches, side*side region tokens. Region r attends only to
    itself and the patches of its (grid/side)^2 block; those patches may also attend to r; CLS and
    prompts cannot see any region token; patches do not see other regions.
    """
    if grid % side:
        raise ConfigError(
            f"CLIP-RC needs a patch grid divisible by {side} (crop = multiple of "
            f"{side} patches), got a {grid}x{grid} grid"
        )
    head, n_patch, n_reg = 1 + num_prompts, grid * grid, side * side
    n = head + n_patch + n_reg
    allowed = torch.ones(n, n, dtype=torch.bool)
    allowed[:, head + n_patch :] = False  # nobody sees region tokens ...
    allowed[head + n_patch :, :] = False  # ... and region tokens see nothing ...
    cell = grid // side
    rows = torch.arange(n_patch) // grid // cell
    cols = torch.arange(n_patch) % grid // cell
    region_of_patch = rows * side + cols
    for r in range(n_reg):
        tok = head + n_patch + r
        patches = head + torch.nonzero(region_of_patch == r).flatten()
        allowed[tok, tok] = True  # ... except themselves,
        allowed[tok, patches] = True  # their own patches,
        allowed[patches, tok] = True  # and those patches see them back.
    mask = torch.zeros(n, n)
    mask[~allowed] = MASK_VALUE
    return mask


class VPTViT(nn.Module):
    """Deep-VPT CLIP ViT over an open_clip ``VisionTransformer``'s weights.

    forward(image [B,3,H,W] normalised) -> VPTOutput-like tuple:
        patches [B,D,H/p,W/p] L2-normalised over D, cls [B,D] L2-normalised,
        regions [B,D,4,4] L2-normalised (only with ``region_tokens``) else None.
    """

    def __init__(
        self,
        visual: nn.Module,
        image_size: int,
        num_tokens: int,
        total_d_layer: int | None = None,
        region_tokens: bool = False,
    ):
        super().__init__()
        self.conv1, self.class_embedding, self.ln_pre = (
            visual.conv1,
            visual.class_embedding,
            visual.ln_pre,
        )
        self.transformer, self.ln_post, self.proj = visual.transformer, visual.ln_post, visual.proj
        self.patch = visual.conv1.kernel_size[0]
        self.grid = image_size // self.patch
        width = visual.conv1.out_channels
        for block in self.transformer.resblocks:
            block.mlp.gelu = QuickGELU()  # official blocks: CLIP's QuickGELU, LN eps 1e-5
        with torch.no_grad():
            pos = resize_pos_embed(visual.positional_embedding.detach(), (self.grid, self.grid))
        self.positional_embedding = nn.Parameter(pos.clone())
        layers = len(self.transformer.resblocks)
        total_d_layer = layers - 1 if total_d_layer is None else total_d_layer
        if not 0 <= total_d_layer < layers:
            raise ConfigError(f"total_d_layer must be in [0, {layers - 1}], got {total_d_layer}")
        self.num_tokens, self.total_d_layer = num_tokens, total_d_layer
        val = math.sqrt(
            6.0 / float(3 * self.patch + width)
        )  # official init (patch given as 1-tuple)
        self.prompt_embeddings = nn.Parameter(torch.empty(1, num_tokens, width).uniform_(-val, val))
        if total_d_layer > 0:
            self.deep_prompt_embeddings = nn.Parameter(
                torch.empty(total_d_layer, num_tokens, width).uniform_(-val, val)
            )
        self.prompt_proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
        self.prompt_norm = nn.LayerNorm(width, eps=1e-6)
        self.prompt_dropout = nn.Dropout(0.1)
        self.region_tokens = region_tokens
        if region_tokens:
            # Initialised as 16 identical rows class_embedding + pos[0]; frozen in official training
            # (its name lacks "prompt"), so they stay identical (METHODS A3, E).
            # Official init uses the CLIP position row before the resize (the same row: CLS is
            # kept).
            init = (self.class_embedding + self.positional_embedding[0]).detach()
            self.region_level_bridge = nn.Parameter(init.expand(REGION_SIDE**2, -1).clone())
            self.region_level_bridge.requires_grad_(False)
            self.register_buffer("attn_mask", region_mask(self.grid, num_tokens), persistent=False)
        else:
            self.attn_mask = None

    def _prompts(self, emb: torch.Tensor, bsz: int) -> torch.Tensor:
        return self.prompt_dropout(self.prompt_proj(emb).expand(bsz, -1, -1))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Patch + CLS + position embedding, ln_pre, shallow prompts: [B, 1+T+h*w(+16), W]."""
        x = self.conv1(image)
        bsz, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls_tok = self.class_embedding.to(x.dtype) + x.new_zeros(bsz, 1, width)
        x = torch.cat([cls_tok, x], dim=1)
        pos = resize_pos_embed(self.positional_embedding, (gh, gw))
        # Official quirk kept for weight compatibility: the CLS position row gets class_embedding
        # added again, although the CLS token already is class_embedding (METHODS A2).
        pos = torch.cat([(pos[0] + self.class_embedding)[None], pos[1:]])
        x = x + pos[None]
        if self.region_tokens:  # appended after the position add (none of their own), before ln_pre
            x = torch.cat(
                [x, self.region_level_bridge[None].expand(bsz, -1, -1).to(x.dtype)], dim=1
            )
        x = self.ln_pre(x)
        return torch.cat([x[:, :1], self._prompts(self.prompt_embeddings, bsz), x[:, 1:]], dim=1)

    def forward(self, image: torch.Tensor):
        gh, gw = image.shape[-2] // self.patch, image.shape[-1] // self.patch
        if self.region_tokens and (gh, gw) != (self.grid, self.grid):
            raise ValueError(
                f"CLIP-RC's region mask is fixed for a {self.grid}x{self.grid} patch grid "
                f"({self.grid * self.patch} px); got {image.shape[-2]}x{image.shape[-1]}"
            )
        x = self.embed(image)
        bsz, t = x.shape[0], self.num_tokens
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= self.total_d_layer:
                deep = self._prompts(self.deep_prompt_embeddings[i - 1], bsz)
                x = torch.cat([x[:, :1], deep, x[:, 1 + t :]], dim=1)
            x = block_forward(block, x, self.attn_mask)
        n_patch = gh * gw
        main = self.ln_post(self.prompt_norm(x[:, : 1 + t + n_patch])) @ self.proj
        cls = F.normalize(main[:, 0], dim=-1)
        patches = F.normalize(main[:, -n_patch:], dim=-1).transpose(1, 2).reshape(bsz, -1, gh, gw)
        regions = None
        if self.region_tokens:
            # Region tokens skip prompt_norm but get ln_post + proj + L2 norm.
            reg = F.normalize(self.ln_post(x[:, -(REGION_SIDE**2) :]) @ self.proj, dim=-1)
            regions = reg.transpose(1, 2).reshape(bsz, -1, REGION_SIDE, REGION_SIDE)
        return patches, cls, regions
