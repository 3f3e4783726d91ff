"""Render a `MixerSpec` to the source of a mixer file that meets the candidate contract.

    source = render(BASELINE_SPECS["gla"], title="gla")
    spec = spec_from_source(source)     # a rendered file states its spec as JSON in its header

The code is assembled from small fragments, one per design choice, in a fixed order:
parameters are created in the order of the hand-written baselines, so a rendered baseline
draws the same initial weights from the same seed. Rendered files import only torch, einops,
math and evolve.kernels. No torch is imported here.
"""

from __future__ import annotations

import ast
import re
import textwrap

from evolve.model.space import MixerSpec, SpecError

SPEC_MARKER = "MixerSpec (JSON):"

_WIDTH = {0.5: "d // 2", 1.0: "d", 2.0: "2 * d"}
_FEATURE = {"identity": None, "elu_plus_one": "F.elu({}) + 1", "relu": "F.relu({})",
            "silu": "F.silu({})", "sigmoid": "{}.sigmoid()", "softmax": "{}.softmax(-1)",
            "relu_squared": "F.relu({}).square()"}
_HEADS = 'rearrange({}, "b t (h d) -> b t h d", h=self.num_heads)'

# A causal sliding-window softmax attention in O(T * window): each block of `window` queries
# attends to its own block and the previous one, masked to the last `window` positions.
_WINDOW_FN = '''

def window_attention(q, k, v, window):
    """Causal softmax attention over the last `window` tokens; q, k, v: [B, T, H, *]."""
    t = q.shape[1]
    pad = -t % window
    q, k, v = (rearrange(F.pad(u, (0, 0, 0, 0, 0, pad)), "b (n w) h d -> b h n w d", w=window)
               for u in (q, k, v))
    k = torch.cat([F.pad(k, (0, 0, 0, 0, 1, 0))[:, :, :-1], k], dim=3)  # [B, H, N, 2W, K]
    v = torch.cat([F.pad(v, (0, 0, 0, 0, 1, 0))[:, :, :-1], v], dim=3)  # [B, H, N, 2W, V]
    s = torch.einsum("bhnqd,bhnkd->bhnqk", q, k) * q.shape[-1] ** -0.5  # [B, H, N, W, 2W]
    i = torch.arange(window, device=q.device)[:, None]
    j = torch.arange(2 * window, device=q.device)[None, :] - window
    block = torch.arange(s.shape[2], device=q.device)[:, None, None]
    keep = (j <= i) & (j > i - window) & (block * window + j >= 0)  # [N, W, 2W]
    s = s.masked_fill(~keep, float("-inf"))
    o = torch.einsum("bhnqk,bhnkd->bhnqd", s.softmax(-1), v)
    return rearrange(o, "b h n w d -> b (n w) h d")[:, :t]
'''


def describe(spec: MixerSpec) -> str:
    """A one-line summary of the choices that are not off, e.g. for a title or a table."""
    parts = [f"{spec.update_rule} rule"]
    if spec.feature_map != "identity":
        parts.append(f"{spec.feature_map} features")
    if spec.qk_norm != "none":
        parts.append(f"{spec.qk_norm} q/k")
    if spec.decay != "none":
        param = f" ({spec.decay_param})" if spec.decay in ("scalar", "channel") else ""
        parts.append(f"{spec.decay} decay{param}")
    if spec.beta != "none":
        parts.append(f"{spec.beta} beta")
    if spec.conv_size != 0:
        width = "the run's width" if spec.conv_size is None else f"width {spec.conv_size}"
        parts.append(f"short conv ({width}) on {spec.conv_targets}")
    if spec.out_norm != "none":
        parts.append(f"{spec.out_norm} output")
    if spec.out_gate != "none":
        parts.append(f"{spec.out_gate} output gate")
    if spec.local_path != "none":
        window = f" {spec.local_window}" if spec.local_path == "window" else ""
        parts.append(f"local {spec.local_path}{window} ({spec.fusion})")
    if spec.key_ratio != 1.0 or spec.value_ratio != 1.0:
        parts.append(f"k/v widths x{spec.key_ratio:g}/x{spec.value_ratio:g}")
    if spec.position != "none":
        parts.append(f"{spec.position} positions")
    return ", ".join(parts)


def render(spec: MixerSpec, *, title: str | None = None) -> str:
    """The mixer file for `spec`; `title` (a baseline or candidate name) heads its docstring."""
    body = _Body(spec)
    head = title or f"mixer {spec.digest()}"
    summary = textwrap.fill(describe(spec) + ".", width=96)
    doc = (f'"""{head}: rendered by evolve.model.render.\n\n{summary}\n\n'
           f'{SPEC_MARKER}\n{spec.to_json(indent=2)}\n"""\n')
    code = "\n".join(body.init + [""] + body.forward)
    imports = _imports(spec, body.helpers + code)
    return doc + "\n" + imports + body.constants + body.helpers + "\n\n" + code + "\n"


def spec_from_source(source: str) -> MixerSpec:
    """The spec stated in a rendered file's header; SpecError if the file states none."""
    try:
        doc = ast.get_docstring(ast.parse(source), clean=False) or ""
    except SyntaxError as exc:
        raise SpecError(f"not a rendered mixer file: it does not parse ({exc})") from exc
    if SPEC_MARKER not in doc:
        raise SpecError(f"not a rendered mixer file: its docstring has no {SPEC_MARKER!r} line")
    return MixerSpec.from_json(doc.split(SPEC_MARKER, 1)[1])


def _imports(spec: MixerSpec, code: str) -> str:
    used = lambda name: re.search(rf"\b{name}\b", code) is not None  # noqa: E731
    lines = ["import math", ""] if used("math\\.") else []
    if used("torch\\."):
        lines.append("import torch")
    lines.append("import torch.nn as nn")
    if used("F\\."):
        lines.append("import torch.nn.functional as F")
    lines += ["from einops import rearrange", ""]
    kernel = {("linear", "none"): "linear_attn", ("linear", "channel"): "gla",
              ("delta", "none"): "delta_rule"}
    kernel.update({("linear", decay): "simple_gla" for decay in ("scalar", "fixed", "learned")})
    if not spec.is_quadratic:
        name = _delta_kernel(spec) or kernel.get((spec.update_rule, spec.decay))
        name = name or ("gla" if spec.update_rule == "linear" else "gated_delta_rule")
        lines.append(f"from evolve.kernels import {name}")
    modules = [m for m in ("GatedRMSNorm", "RMSNorm", "ShortConvolution", "l2_norm") if used(m)]
    if modules:
        lines.append(f"from evolve.kernels.modules import {', '.join(modules)}")
    return "\n".join(lines) + "\n"


def _delta_kernel(spec: MixerSpec) -> str | None:
    """The kernel of the delta-rule variants beyond (Gated) DeltaNet, else None."""
    if spec.update_rule != "delta":
        return None
    if spec.removal_key == "separate":
        return "generalized_delta_rule"
    if spec.num_householder > 1:
        return "gated_delta_product"
    return "kda" if spec.decay == "channel" else None


class _Body:
    """The class body of a rendered mixer: __init__ and forward lines, built choice by choice."""

    def __init__(self, spec: MixerSpec) -> None:
        self.s = spec
        self.kw, self.vw = _WIDTH[spec.key_ratio], _WIDTH[spec.value_ratio]
        self.n = spec.num_householder  # k, v and beta have n per token (DeltaProduct)
        self.heads_n = "h" if self.n == 1 else f"{self.n} * h"
        self.kw_n, self.vw_n = ((f"{self.n} * {w}" for w in (self.kw, self.vw)) if self.n > 1
                                else (self.kw, self.vw))
        self.constants = ""
        self.helpers = _WINDOW_FN if spec.local_path == "window" else ""
        self.init = ["class Mixer(nn.Module):", "    def __init__(self, cfg):",
                     "        super().__init__()", "        d, h = cfg.hidden_size, cfg.num_heads",
                     "        self.num_heads = h"]
        self.forward = ["    def forward(self, x):  # x: [B, T, D]"]
        self._params()
        self._forward()
        if self.constants:
            self.constants = "\n" + self.constants

    def p(self, *lines: str) -> None:
        self.init += ["        " + line for line in lines]

    def f(self, *lines: str) -> None:
        self.forward += ["        " + line for line in lines]

    def _params(self) -> None:
        s, kw, vw = self.s, self.kw, self.vw
        if s.position == "learned":
            self.p("self.pos = nn.Parameter(torch.randn(cfg.max_seq_len, d) * 0.02)")
        self.p(f"self.q_proj = nn.Linear(d, {kw}, bias=False)",
               f"self.k_proj = nn.Linear(d, {self.kw_n}, bias=False)",
               f"self.v_proj = nn.Linear(d, {self.vw_n}, bias=False)")
        separate = s.update_rule == "delta" and s.removal_key == "separate"
        if separate:
            # RWKV-7: a per-channel in-context learning rate, the removal key's scale k_k and
            # the write key's mix k_a, initialised as RWKV-7 does
            self.p(f"self.b_proj = nn.Linear(d, {kw}, bias=False)",
                   f"self.k_k = nn.Parameter(torch.full(({kw},), 0.85))",
                   f"self.k_a = nn.Parameter(torch.ones({kw}))")
        elif s.beta in ("sigmoid", "sigmoid2"):
            self.p(f"self.b_proj = nn.Linear(d, {self.heads_n}, bias=False)")
        elif s.beta == "constant":
            self.p(f"self.beta_logit = nn.Parameter(torch.zeros({self.heads_n}))")
        if s.decay == "scalar":
            self.p("self.a_proj = nn.Linear(d, h, bias=False)")
        elif s.decay == "channel":
            self.constants += "GATE_RANK = 16\n"
            bias = s.decay_param != "mamba2"
            self.p("self.gk_proj = nn.Sequential(nn.Linear(d, GATE_RANK, bias=False),",
                   f"                             nn.Linear(GATE_RANK, {kw}, bias={bias}))")
        if s.decay_param == "logsigmoid" and s.decay in ("scalar", "channel"):
            self.constants += f"GATE_LOGIT_NORMALIZER = {s.gate_normalizer}\n"
        if s.out_gate != "none":
            self.p(f"self.g_proj = nn.Linear(d, {vw}, bias=False)")
        if s.decay_param == "mamba2" and s.decay in ("scalar", "channel"):
            self.p("# Mamba-2 style decay: A in [1, 16], dt in [1e-3, 1e-1] at initialisation.",
                   "self.A_log = nn.Parameter(torch.empty(h).uniform_(1, 16).log())",
                   f"dt = torch.exp(torch.empty({'h' if s.decay == 'scalar' else kw})"
                   ".uniform_(math.log(1e-3), math.log(1e-1)))",
                   "self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))"
                   "  # softplus^-1(dt)")
        elif s.decay in ("fixed", "learned"):
            # RetNet's decays 1 - 2^(-5-i): head i remembers about 2^(5+i) tokens.
            retnet = "torch.log1p(-torch.exp2(-5.0 - torch.arange(h, dtype=torch.float32)))"
            if s.decay == "fixed":
                self.p(f'self.register_buffer("log_decay", {retnet}, persistent=False)')
            else:
                self.p(f"self.A_log = nn.Parameter((-{retnet}).log())  # log-decay -exp(A_log)")
        self._conv_params()
        if s.local_path == "conv":
            self.p(f"self.local_conv = ShortConvolution({vw}, 4, activation=None)")
        if s.local_path != "none" and s.fusion == "gate":
            self.p("self.f_proj = nn.Linear(d, h, bias=False)")
        if s.qk_norm == "rmsnorm":
            self.p(f"self.q_norm = RMSNorm({kw} // h)", f"self.k_norm = RMSNorm({kw} // h)")
        if s.out_norm == "rmsnorm":
            norm = "GatedRMSNorm" if s.out_gate == "silu" else "RMSNorm"
            self.p(f"self.o_norm = {norm}({vw} // h)")
        self.p(f"self.o_proj = nn.Linear({vw}, d, bias=False)")

    def _conv_params(self) -> None:
        s = self.s
        if s.conv_size == 0:
            return
        widths = [{"q": self.kw, "k": self.kw_n, "v": self.vw_n}[c] for c in s.conv_targets]
        size = "cfg.conv_size" if s.conv_size is None else str(s.conv_size)
        if len(set(widths)) == 1:
            convs = f"[ShortConvolution({widths[0]}, {size}) for _ in range({len(widths)})]"
        else:
            convs = f"[ShortConvolution(n, {size}) for n in ({', '.join(widths)})]"
        if s.conv_size is None:
            self.p("self.convs = nn.ModuleList(", f"    {convs} if cfg.conv_size else []", ")")
        else:
            self.p(f"self.convs = nn.ModuleList({convs})")

    def _forward(self) -> None:
        s = self.s
        if s.position == "learned":
            self.f("x = x + self.pos[: x.shape[1]].to(x.dtype)")
        self.f("q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)")
        self._conv_forward()
        if s.local_path == "conv":
            self.f(f"o_local = {_HEADS.format('self.local_conv(v)')}")
        if self.n > 1:
            steps = f'rearrange({{}}, "b t (n h d) -> b (t n) h d", n={self.n}, h=self.num_heads)'
            self.f(f"q = {_HEADS.format('q')}",
                   f"k, v = ({steps.format('u')} for u in (k, v))")
        else:
            self.f(f"q, k, v = ({_HEADS.format('u')} for u in (q, k, v))")
        if s.local_path == "window":
            self.constants += f"LOCAL_WINDOW = {s.local_window}\n"
            self.f("o_local = window_attention(q, k, v, LOCAL_WINDOW)  # [B, T, H, V]")
        feature = _FEATURE[s.feature_map]
        if feature:
            self.f(f"q, k = {feature.format('q')}, {feature.format('k')}")
        if s.qk_norm == "l2":
            self.f("q, k = l2_norm(q), l2_norm(k)")
        elif s.qk_norm == "rmsnorm":
            self.f("q, k = self.q_norm(q), self.k_norm(k)")
        self._state_forward()
        if s.local_path != "none":
            if s.fusion == "gate":
                self.f("o = o + self.f_proj(x).sigmoid().unsqueeze(-1) * o_local")
            else:
                self.f("o = o + o_local")
        self._output_forward()

    def _conv_forward(self) -> None:
        s = self.s
        targets = list(s.conv_targets) if s.conv_size != 0 else []
        rest = [c for c in "qkv" if c not in targets]
        silu = s.no_conv_act == "silu"
        if targets:
            if len(targets) == 1:
                conv = f"{targets[0]} = self.convs[0]({targets[0]})"
            else:
                names = ", ".join(targets)
                conv = f"{names} = (conv(u) for conv, u in zip(self.convs, ({names})))"
            if s.conv_size is None:
                self.f("if self.convs:", f"    {conv}")
                if silu:
                    self.f("else:", f"    {_silu(targets)}")
            else:
                self.f(conv)
        if rest and silu:
            self.f(_silu(rest))

    def _state_forward(self) -> None:
        s = self.s
        if s.update_rule == "softmax":
            self.f('q, k, v = (rearrange(u, "b t h d -> b h t d") for u in (q, k, v))',
                   "o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, V]",
                   'o = rearrange(o, "b h t d -> b t h d")')
            return
        beta = {"sigmoid": "self.b_proj(x).sigmoid()",
                "sigmoid2": "2 * self.b_proj(x).sigmoid()  # in (0, 2): negative eigenvalues",
                "constant": "self.beta_logit.sigmoid().expand(*x.shape[:2], -1)",
                "none": "torch.ones_like(q[..., 0])  # full overwrite"}[s.beta]
        if s.update_rule == "delta" and s.removal_key == "separate":
            rate = beta.split("  #")[0]
            self.f(f"beta = {_HEADS.format(rate)}  # [B, T, H, K]")
        elif self.n > 1 and s.beta == "none":
            self.f("beta = torch.ones_like(k[..., 0])  # full overwrite: [B, T * n, H]")
        elif self.n > 1:
            self.f(f'beta = rearrange({beta.split("  #")[0]}, "b t (n h) -> b (t n) h", '
                   f"n={self.n})  # [B, T * {self.n}, H]")
        elif s.update_rule == "delta" or s.beta != "none":
            self.f(f"beta = {beta}" + ("" if "#" in beta else "  # [B, T, H]"))
        if s.update_rule == "linear" and s.beta != "none":
            self.f("v = v * beta.unsqueeze(-1)  # write strength")
        if s.decay == "scalar" and s.decay_param == "mamba2":
            self.f("g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + "
                   "self.dt_bias)")
        elif s.decay == "scalar" and s.decay_param == "rwkv7":
            self.f("g = -math.exp(-0.5) * self.a_proj(x).float().sigmoid()  # [B, T, H]")
        elif s.decay == "scalar":
            self.f("g = F.logsigmoid(self.a_proj(x).float()) / GATE_LOGIT_NORMALIZER  # [B, T, H]")
        elif s.decay == "channel" and s.decay_param == "mamba2":
            self.f("g = F.softplus(self.gk_proj(x).float() + self.dt_bias)",
                   "g = -self.A_log.float().exp()[:, None] * "
                   f"{_HEADS.format('g')}  # [B, T, H, K]")
        elif s.decay == "channel" and s.decay_param == "rwkv7":
            self.f("g = -math.exp(-0.5) * self.gk_proj(x).float().sigmoid()",
                   f"g = {_HEADS.format('g')}  # [B, T, H, K]")
        elif s.decay == "channel":
            self.f("g = F.logsigmoid(self.gk_proj(x).float()) / GATE_LOGIT_NORMALIZER",
                   f"g = {_HEADS.format('g')}  # [B, T, H, K]")
        elif s.decay == "fixed":
            self.f("g = self.log_decay.expand(*x.shape[:2], -1)  # [B, T, H]")
        elif s.decay == "learned":
            self.f("g = -self.A_log.float().exp().expand(*x.shape[:2], -1)  # [B, T, H]")
        per_head = s.decay in ("scalar", "fixed", "learned")
        kernel = _delta_kernel(s)
        if kernel == "generalized_delta_rule":
            self._generalized_forward(per_head)
            return
        if kernel == "gated_delta_product":
            g = "g" if s.decay != "none" else "None"
            call = f"gated_delta_product(q, k, v, {g}, beta, num_householder={self.n})"
        elif kernel == "kda":
            call = "kda(q, k, v, g, beta)  # [B, T, H, V]"
        elif s.update_rule == "linear" and s.decay == "none":
            call = "linear_attn(q, k, v)  # [B, T, H, V]"
        elif s.update_rule == "linear" and per_head:
            call = "simple_gla(q, k, v, g)  # [B, T, H, V]"
        elif s.update_rule == "linear":
            call = "gla(q, k, v, g)"
        elif per_head:
            call = "gated_delta_rule(q, k, v, g, beta)  # [B, T, H, V]"
        else:
            call = "delta_rule(q, k, v, beta)  # [B, T, H, V]"
        self.f(f"o, _ = {call}")

    def _generalized_forward(self, per_head: bool) -> None:
        """RWKV-7's state update: S = diag(w) S - kk (kk * a)^T S + k v^T, with the removal key
        kk = l2(k * k_k), the rate a = beta and the write key k (1 + (a - 1) k_a)."""
        if self.s.decay == "none":
            self.f("g = torch.zeros_like(q)  # no decay")
        elif per_head:
            self.f("g = g.unsqueeze(-1).expand_as(q)  # one decay per head, on every channel")
        self.f('k_k, k_a = (rearrange(p, "(h d) -> h d", h=self.num_heads) '
               "for p in (self.k_k, self.k_a))",
               "kk = l2_norm(k * k_k)  # [B, T, H, K]: the removal key",
               "k = k * (1 + (beta - 1) * k_a)  # the write key",
               "o, _ = generalized_delta_rule(q, k, v, -kk, kk * beta, g)  # [B, T, H, V]")

    def _output_forward(self) -> None:
        s = self.s
        if s.out_gate != "none":
            self.f(f"gate = {_HEADS.format('self.g_proj(x)')}")
        if s.out_norm == "rmsnorm" and s.out_gate == "silu":
            self.f("o = self.o_norm(o, gate)")
        elif s.out_norm == "rmsnorm":
            self.f("o = self.o_norm(o)")
        if s.out_gate == "silu" and s.out_norm == "none":
            self.f("o = o * F.silu(gate)")
        elif s.out_gate == "sigmoid":
            self.f("o = o * gate.sigmoid()")
        self.f('return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))')


def _silu(names: list[str]) -> str:
    return f"{', '.join(names)} = {', '.join(f'F.silu({n})' for n in names)}"
