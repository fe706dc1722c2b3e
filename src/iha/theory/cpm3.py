"""The CPM-3 construction (paper section 4, appendix B): hard attention over cyclic shifts + MLP.

:class:`CPM3Network` reads the tokens of :class:`iha.tasks.CPM3Task` (numbers, padded to
N_max with a pad token) and outputs the CPM-3 count of every position, exactly
(:func:`iha.tasks.cpm3_targets`). Channels of the residual stream (``d_model``):

* ``[0, M)``: one-hot residue of the own number (all zero for padding);
* ``[M, M + N_max)``: one-hot position;
* block s in ``[M + N_max + s*M, M + N_max + (s+1)*M)``, s < N_max: the one-hot residue of the
  number at position ``(i + s) mod N_max`` (written by attention).

Attention (``mask="none"``, softmax with a large inverse temperature ``beta``, so every needed
weight is 1 and every other weight is below float64 resolution): query head h asks for position
``i + a_h``, key head j offers position t as ``t - b_j``, so the pair realises shift ``a_h + b_j``.

* MHA (``InterleavedHeadAttention`` with P = 1, identity mixing): N_max heads, ``a_s = s``,
  ``b = 0``.
* IHA (H = P = ceil(sqrt(N_max))): ``a_h = h*H``, ``b_j = j``. ``alpha_q`` routes query head h to
  pseudo 0 of head h; ``alpha_k``/``alpha_v`` route key/value head j to pseudo j of every head,
  and value head j writes into block j of the head dimension. Pseudo query (i, 0) of head h then
  finds exactly P keys at score ``beta`` (one per pseudo key j, at shift hH + j), averages them
  with weight 1/P each into separate blocks, and the collapse (weight P on pseudo 0) restores
  them: one head delivers H shifts, H heads deliver H^2 >= N_max. Shifts >= N_max repeat smaller
  ones and are dropped by ``o_proj``.

Padded positions have all-zero residue channels, so they neither count nor get a count.

MLP: one ReLU unit per (s1, s2, r1, r_i) with ``r2 = (-r_i - g r1) mod M``:
``ReLU(own[r_i] + block_s1[r1] + block_s2[r2] - 2)`` is 1 exactly when all three one-hots are
set, i.e. when ``x_i + g x_(i+s1) + x_(i+s2) = 0 (mod M)``; the output sums them over all
ordered shift pairs, which is the count over all ordered position pairs (j1, j2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from iha.attention import InterleavedHeadAttention
from iha.validate import check_choice, check_int, check_positive_number

ARCHITECTURES: tuple[str, ...] = ("iha", "mha")


def heads_needed(n_max: int, arch: str) -> int:
    """Heads of the construction: ceil(sqrt(N_max)) for IHA, N_max for MHA."""
    check_int("n_max", n_max, 1)
    check_choice("arch", arch, ARCHITECTURES)
    return math.isqrt(n_max - 1) + 1 if arch == "iha" else n_max


class CPM3Network(nn.Module):
    """Embedding + one attention layer (residual) + a ReLU MLP; see the module docstring.

    ``forward(tokens)``: (B, N_max) int64 token ids -> (B, N_max) float64 counts.
    """

    def __init__(
        self,
        token_embed: nn.Embedding,
        pos_embed: nn.Embedding,
        attn: InterleavedHeadAttention,
        mlp: nn.Sequential,
        *,
        n_max: int,
        modulus: int,
        g: int,
    ) -> None:
        super().__init__()
        self.token_embed, self.pos_embed, self.attn, self.mlp = token_embed, pos_embed, attn, mlp
        self.n_max, self.modulus, self.g = n_max, modulus, g

    def forward(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embed(tokens) + self.pos_embed(positions)  # (B, N, D)
        x = x + self.attn(x)
        return self.mlp(x).squeeze(-1)  # (B, N)


@torch.no_grad()
def build_cpm3_network(
    n_max: int,
    modulus: int,
    g: int,
    *,
    arch: str = "iha",
    n_values: int | None = None,
    beta: float = 100.0,
) -> CPM3Network:
    """The exact CPM-3 network for sequences of length <= ``n_max``.

    Args:
        n_max: N_max (the padded length).
        modulus: M.
        g: the multiplier G.
        arch: "iha" (ceil(sqrt(N_max)) heads) or "mha" (N_max heads).
        n_values: token ids ``0..n_values-1`` are numbers and ``n_values`` is the pad token,
            as in :class:`iha.tasks.CPM3Task` (default: ``modulus``).
        beta: inverse temperature of the hard attention.

    Returns:
        A float64 :class:`CPM3Network`.
    """
    heads = heads_needed(n_max, arch)
    m = check_int("modulus", modulus, 1)
    check_int("g", g, None)
    n_values = check_int("n_values", modulus if n_values is None else n_values, 1)
    check_positive_number("beta", beta)
    pseudo = heads if arch == "iha" else 1
    head_dim = max(n_max, pseudo * m)
    pos0, blocks0 = m, m + n_max  # channel offsets
    d_model = blocks0 + n_max * m

    token_embed = nn.Embedding(n_values + 1, d_model).double()
    token_embed.weight.zero_()
    for t in range(n_values):
        token_embed.weight[t, t % m] = 1.0  # row n_values (padding) stays zero
    pos_embed = nn.Embedding(n_max, d_model).double()
    pos_embed.weight.zero_()
    pos_embed.weight[:, pos0 : pos0 + n_max] = torch.eye(n_max, dtype=torch.float64)

    attn = InterleavedHeadAttention(
        d_model,
        heads,
        n_pseudo=pseudo,
        collapse="global",
        mask="none",
        rope_theta=None,
        init="exact_mha",
        head_dim=head_dim,
        kernel="softmax",
        backend="reference",
    ).double()
    for p in attn.parameters():
        p.zero_()
    q_gain = beta * math.sqrt(head_dim)  # the layer scales scores by 1/sqrt(head_dim)
    query_shift = [h * pseudo for h in range(heads)]  # a_h
    key_shift = list(range(pseudo)) if arch == "iha" else [0] * heads  # b_j
    for h in range(heads):
        for i in range(n_max):
            attn.q_proj.weight[h * head_dim + (i + query_shift[h]) % n_max, pos0 + i] = q_gain
            attn.k_proj.weight[h * head_dim + (i - key_shift[h]) % n_max, pos0 + i] = 1.0
        block = h if arch == "iha" else 0  # value head j writes into block j of the head dim
        for r in range(m):
            attn.v_proj.weight[h * head_dim + block * m + r, r] = 1.0
    if arch == "iha":
        for h in range(heads):
            attn.alpha_q[h, h, 0] = 1.0
            attn.alpha_k[h, :, h] = 1.0
            attn.alpha_v[h, :, h] = 1.0
            attn.collapse[h, h * pseudo] = float(pseudo)  # undo the 1/P average over P keys
    else:
        eye = torch.eye(heads, dtype=torch.float64)
        attn.alpha_q[:, :, 0] = eye
        attn.alpha_k[:, :, 0] = eye
        attn.alpha_v[:, :, 0] = eye
        attn.collapse.copy_(eye)
    for h in range(heads):
        for j in range(pseudo):
            shift = query_shift[h] + (key_shift[j] if arch == "iha" else 0)
            if shift >= n_max:
                continue
            for r in range(m):
                attn.o_proj.weight[blocks0 + shift * m + r, h * head_dim + j * m + r] = 1.0

    units = n_max * n_max * m * m
    hidden = nn.Linear(d_model, units).double()
    out = nn.Linear(units, 1).double()
    hidden.weight.zero_()
    hidden.bias.fill_(-2.0)
    out.weight.fill_(1.0)
    out.bias.zero_()
    unit = 0
    for s1 in range(n_max):
        for s2 in range(n_max):
            for r1 in range(m):
                for ri in range(m):
                    r2 = (-ri - g * r1) % m
                    hidden.weight[unit, ri] += 1.0
                    hidden.weight[unit, blocks0 + s1 * m + r1] += 1.0
                    hidden.weight[unit, blocks0 + s2 * m + r2] += 1.0
                    unit += 1
    mlp = nn.Sequential(hidden, nn.ReLU(), out)
    return CPM3Network(token_embed, pos_embed, attn, mlp, n_max=n_max, modulus=m, g=g)


def attention_qk_parameters(net: CPM3Network) -> int:
    """Size of the W_Q and W_K blocks the construction uses: positions x N_max dims per head.

    Equals 2 * H * N_max^2: the paper's Theta(N_max^3) for MHA (H = N_max) against
    Theta(N_max^2.5) for IHA (H = ceil(sqrt(N_max))).
    """
    layer = net.attn
    pos = slice(net.modulus, net.modulus + net.n_max)  # position channels
    used_rows = (torch.arange(layer.n_heads * layer.head_dim) % layer.head_dim) < net.n_max
    return sum(w[used_rows][:, pos].numel() for w in (layer.q_proj.weight, layer.k_proj.weight))
