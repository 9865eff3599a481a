"""Replay the random draws of the jeonsworld-lineage model constructors (TransFG `models/modeling.py`).

The released code seeds the global RNG, builds its model (every layer draws its initial values in
constructor order) and then overwrites the pretrained parts with `load_from`. The layers it leaves
fresh therefore hold the values drawn at their place in that stream. fgbench builds timm's model,
whose own init draws differently; to give a seeded run the released values, an adapter snapshots
the RNG before building, restores it afterwards and replays the released constructors' draws with
throwaway layers of the same shapes in the same order (PyTorch's init functions, so the values are
bit-identical on the same torch version), keeping the ones it needs. The RNG is left where the
released constructor leaves it.

TransFG (T:models/modeling.py:136-160, 177-184, 249-258, 289-297) draws: the patch Conv2d; then for
each of the L-1 encoder blocks and the part layer a `Block`, whose `Mlp` comes first (fc1, fc2 at
PyTorch's default, then xavier-uniform weights and N(0, 1e-6) biases) and its `Attention` second
(query, key, value, out Linears); the LayerNorms draw nothing; last the `part_head` Linear. FFVT
(F:models/modeling.py:151-176, 277-294, 340-374) draws its embedding (a hybrid's ResNetV2 first),
then `ff_last_layer`, then the L-1 blocks, then the head, which it zeroes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


def released_block_draws(dim: int, mlp_dim: int) -> dict[str, torch.Tensor]:
    """One released `Block`'s draws, in its constructor's order, as timm `Block` state (no norms)."""
    fc1, fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
    nn.init.xavier_uniform_(fc1.weight)
    nn.init.xavier_uniform_(fc2.weight)
    nn.init.normal_(fc1.bias, std=1e-6)
    nn.init.normal_(fc2.bias, std=1e-6)
    query, key, value, out = (nn.Linear(dim, dim) for _ in range(4))
    return {
        "attn.qkv.weight": torch.cat([query.weight, key.weight, value.weight]).detach(),
        "attn.qkv.bias": torch.cat([query.bias, key.bias, value.bias]).detach(),
        "attn.proj.weight": out.weight.detach(), "attn.proj.bias": out.bias.detach(),
        "mlp.fc1.weight": fc1.weight.detach(), "mlp.fc1.bias": fc1.bias.detach(),
        "mlp.fc2.weight": fc2.weight.detach(), "mlp.fc2.bias": fc2.bias.detach(),
    }


def _stem_draws(vit: VisionTransformer) -> None:
    """The embedding's draws: a hybrid's ResNetV2 convolutions first (the port's root conv, then per unit
    conv1, conv2, conv3 and the projection; GroupNorms draw nothing), then the patch Conv2d."""
    backbone = getattr(vit.patch_embed, "backbone", None)
    convs = []
    if backbone is not None:
        convs.append(backbone.stem.conv)
        for stage in backbone.stages:
            for block in stage.blocks:
                convs += [block.conv1, block.conv2, block.conv3]
                if block.downsample is not None:
                    convs.append(block.downsample.conv)
    convs.append(vit.patch_embed.proj)
    for conv in convs:
        nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                  bias=conv.bias is not None)


def released_draws(vit: VisionTransformer, num_classes: int, *, new_block_first: bool
                   ) -> tuple[dict[str, torch.Tensor], nn.Linear]:
    """The released constructor's draws from the current RNG state, for the geometry of `vit`: the
    new last block (timm `Block` state) and the head; the embedding and the L-1 encoder blocks are
    drawn and dropped (`load_from` overwrites them, or the backbone keeps timm's init).

    new_block_first: FFVT builds `ff_last_layer` before the encoder blocks (F:models/modeling.py:
    277-294); TransFG builds `part_layer` after them (T:models/modeling.py:249-258)."""
    dim, mlp_dim = vit.embed_dim, vit.blocks[0].mlp.fc1.out_features
    with torch.device("cpu"), torch.no_grad():
        _stem_draws(vit)
        new_block = released_block_draws(dim, mlp_dim) if new_block_first else None
        for _ in range(len(vit.blocks) - 1):
            released_block_draws(dim, mlp_dim)
        if new_block is None:
            new_block = released_block_draws(dim, mlp_dim)
        head = nn.Linear(dim, num_classes)
    return new_block, head


def load_block_draws(block: Block, draws: dict[str, torch.Tensor]) -> None:
    """Copy `released_block_draws` into a timm `Block`; its LayerNorms start at (1, 0)."""
    block.norm1.reset_parameters()
    block.norm2.reset_parameters()
    state = block.state_dict()
    with torch.no_grad():
        for key, value in draws.items():
            state[key].copy_(value)


@contextmanager
def rewound_rng() -> Iterator[None]:
    """Run the body (a timm build) and then put the global CPU RNG back where it was on entry, so
    that the replay that follows draws from the state the released constructor starts from."""
    state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
